import numpy as np

from tumorchar.experiments.e1_mtl import default_methods, run_e1
from tumorchar.experiments.protocol import FoldFeatures, Protocol, make_folds
from tumorchar.experiments.results import RESULT_COLUMNS, ResultLog

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
    assert len(table) == 3  # trace norm, proposed with and without Ψ
    assert np.isfinite(table.values).all()
    assert (table["accuracy"] > 0.5).all()
