import numpy as np

from tumorchar.experiments.e4_upper_bound import _Adasyn, build_classifier, run_e4
from tumorchar.experiments.protocol import Protocol, make_folds
from tumorchar.experiments.results import ResultLog


def test_e4_supervised_upper_bound_on_each_feature(class_like):
    data, X = class_like
    folds = make_folds(data.labels, data.groups, Protocol(n_splits=3))
    features = {"gist": X, "fc7_relu": np.maximum(X, 0), "fc8_relu": X[:, :10]}
    log = run_e4(
        data,
        features,
        folds,
        ResultLog("E4", "synthetic", "h"),
        feature_label={"fc7_relu": "random-init", "fc8_relu": "random-init"},
        rf_trees=20,
    )
    frame = log.metrics_frame()
    table = frame.groupby(["method", "metric"])["value"].mean().unstack()
    assert "VGG-fc7 (random-init) + RF" in table.index
    assert len(table) == 6
    assert set(frame["paper_row"]) >= {"GIST + SVM", "VGG-fc8 + RF"}
    assert (table["accuracy"] > 0.8).all() and (table["auc"] > 0.85).all()


def test_adasyn_oversamples_the_minority_class_of_the_training_fold_only():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(100, 5))
    y = (np.arange(100) < 20).astype(int)
    X[:20] += 0.5
    X_res, y_res = _Adasyn(seed=0).fit_resample(X, y)
    assert (y_res == 1).sum() > 20 and np.array_equal(X_res[:100], X)
    # the pipeline resamples in fit only: prediction returns one label per test case
    model = build_classifier("SVM", oversample=True, seed=0).fit(X, y)
    assert model.predict(X[:7]).shape == (7,)
    # a fold too small for ADASYN's neighbourhood is passed through unchanged
    X_small, y_small = _Adasyn(seed=0).fit_resample(X[15:40], y[15:40])
    assert len(y_small) == 25


def test_imbalance_is_handled_by_adasyn(class_like):
    data, X = class_like
    folds = make_folds(data.labels, data.groups, Protocol(n_splits=3))
    log = run_e4(
        data, {"gist": X}, folds, ResultLog("E4", "mri", "h"), oversample=True, rf_trees=20
    )
    table = log.metrics_frame().groupby(["method", "metric"])["value"].mean().unstack()
    assert (table["sensitivity"] > 0.7).all()
