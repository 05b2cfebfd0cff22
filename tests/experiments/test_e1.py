import numpy as np

from tumorchar.experiments.e1_mtl import (
    PROPOSED,
    RHO1_ZERO_SUFFIX,
    default_methods,
    run_e1,
)
from tumorchar.experiments.protocol import FoldFeatures, Protocol, make_folds
from tumorchar.experiments.results import RESULT_COLUMNS, ResultLog
from tumorchar.models.recipes import LASSO, inner_splits

SKLEARN_ONLY = [m for m in default_methods() if "MTL" not in m.name]


def _summary(log):
    frame = log.metrics_frame()
    return frame.groupby(["method", "metric"])["value"].mean().unstack()


def test_e1_scores_every_available_method_on_every_fold(lung_like):
    data, X, diameter = lung_like
    folds = make_folds(data.labels, data.groups, Protocol(n_splits=3))
    log = ResultLog("E1", "synthetic", "h")
    run_e1(data, {"gist": X, "diameter": diameter}, folds, log, methods=SKLEARN_ONLY)
    frame = log.metrics_frame()
    assert list(frame.columns) == RESULT_COLUMNS
    table = _summary(log)
    # no C3D features given → those rows are skipped, not invented
    assert set(table.index) == {
        "GIST + Lasso",
        "GIST + Ridge",
        "Reference: size only (equivalent diameter) + linear",
        "Reference: radiologists' six mean attributes + linear",
    }
    assert (frame.groupby("method")["fold"].nunique() == 3).all()
    # signal in the features is found; the attributes carry most of it
    assert table.loc["GIST + Ridge", "accuracy"] > 0.7
    attrs = table.loc["Reference: radiologists' six mean attributes + linear"]
    assert attrs["mean_abs_diff"] < table.loc["GIST + Lasso", "mean_abs_diff"]
    assert attrs["auc"] > 0.9
    predictions = log.predictions_frame()
    assert len(predictions) == 4 * len(data.case_ids)  # each case once per method


def test_fold_features_are_computed_once_per_fold_from_the_training_cases(lung_like):
    data, X, _ = lung_like
    folds = make_folds(data.labels, data.groups, Protocol(n_splits=3))
    calls = []

    def finetuned(fold):
        calls.append(fold.index)
        center = X[fold.train].mean(axis=0)
        return X[fold.train] - center, X[fold.test] - center

    methods = [m for m in SKLEARN_ONLY if m.feature == "gist"]
    methods = [type(m)(m.name, "c3d_finetuned", m.recipe) for m in methods]
    run_e1(
        data,
        {"c3d_finetuned": FoldFeatures(finetuned)},
        folds,
        ResultLog("E1", "s", "h"),
        methods=methods,
    )
    assert calls == [0, 1, 2]


def test_proposed_and_trace_norm_mtl_run_inside_the_folds(lung_like):
    data, X, _ = lung_like
    folds = make_folds(data.labels, data.groups, Protocol(n_splits=3))
    methods = [m for m in default_methods() if m.multitask]
    log = run_e1(data, {"c3d_finetuned": X}, folds, ResultLog("E1", "s", "h"), methods=methods)
    table = _summary(log)
    # trace norm; proposed, without Ψ, paper's fixed ρ; ρ1 = 0 rows of the two inner-CV ones
    assert len(table) == 6
    assert sum(name.endswith(RHO1_ZERO_SUFFIX) for name in table.index) == 2
    main = table[["accuracy", "mean_abs_diff", "auc", "out_of_range"]]
    assert np.isfinite(main.values).all()
    assert (table["accuracy"] > 0.5).all()
    proposed = table.loc[[n for n in table.index if PROPOSED in n and "[" not in n][0]]
    assert proposed["graph_edges"] >= 0 and np.isfinite(proposed["rho1_chosen"])
    assert proposed["features_kept"] == X.shape[1]


def test_inner_cross_validation_is_grouped_by_patient(lung_like):
    data, X, _ = lung_like
    for inner_train, inner_test in inner_splits(data.groups):
        assert not set(data.groups[inner_train]) & set(data.groups[inner_test])
    lasso = LASSO.fit(X, data.scores[:, 0], groups=data.groups)
    for inner_train, inner_test in lasso[-1].cv:  # LassoCV's own splits
        assert not set(data.groups[inner_train]) & set(data.groups[inner_test])
