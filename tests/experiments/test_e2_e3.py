import numpy as np

from tumorchar.experiments.e2_unsupervised import run_e2  # noqa: E402
from tumorchar.experiments.e3_deep_features import run_e3  # noqa: E402
from tumorchar.experiments.protocol import Protocol, make_folds
from tumorchar.experiments.results import ResultLog


def _table(log):
    frame = log.metrics_frame()
    return frame.groupby(["method", "metric"], sort=False)["value"].mean().unstack()


def test_e2_reports_label_free_and_paper_protocol_rows(class_like):
    data, X = class_like
    folds = make_folds(data.labels, data.groups, Protocol(n_splits=3))
    log = run_e2(data, X, folds, ResultLog("E2", "synthetic", "h"), rf_trees=20)
    table = _table(log)
    assert len(table) == 8  # 4 methods × 2 naming rules
    marked = [m for m in table.index if "[paper protocol" in m]
    assert len(marked) == 4
    proposed = table.loc["Clustering + ∝SVM (proposed)"]
    # the features separate the classes and the hint points the right way
    assert proposed["accuracy"] > 0.7 and proposed["auc"] > 0.8
    assert set(log.metrics_frame()["paper_row"]) == {
        "Clustering",
        "Clustering + SVM",
        "Clustering + RF",
        "Proposed",
    }


def test_label_free_naming_never_reads_the_labels(class_like):
    data, X = class_like
    folds = make_folds(data.labels, data.groups, Protocol(n_splits=3))
    flipped = type(data)(data.case_ids, 1 - data.labels, data.groups, data.naming_hint)
    a = run_e2(data, X, folds, ResultLog("E2", "s", "h"), namings=("label_free",), rf_trees=5)
    b = run_e2(flipped, X, folds, ResultLog("E2", "s", "h"), namings=("label_free",), rf_trees=5)
    pa, pb = a.predictions_frame(), b.predictions_frame()
    assert np.array_equal(pa["prediction"], pb["prediction"])  # same predictions, labels unread
    acc_a = _table(a)["accuracy"].to_numpy()
    acc_b = _table(b)["accuracy"].to_numpy()
    assert np.allclose(acc_a + acc_b, 1.0)


def test_e3_clusters_each_vgg_layer_with_and_without_relu(class_like):
    data, X = class_like
    folds = make_folds(data.labels, data.groups, Protocol(n_splits=3))
    features = {
        "fc7": X,
        "fc7_relu": np.maximum(X, 0),
        "fc8": X[:, :8],
        "fc8_relu": np.maximum(X[:, :8], 0),
    }
    log = run_e3(
        data,
        features,
        folds,
        ResultLog("E3", "synthetic", "h"),
        weights_label="random-init",
        namings=("label_free",),
    )
    table = _table(log)
    tag = " (random-init; not comparable with the paper)"
    assert list(table.index) == [f"VGG-{layer}{tag}" for layer in
                                 ("fc7", "fc7-ReLU", "fc8", "fc8-ReLU")]  # fmt: skip
    assert set(table.columns) >= {"accuracy", "sensitivity", "specificity"}
    # EfficientNet-Lite0 rows stand in for the VGG layers (their paper rows)
    eff = {"pooled_linear": X, "pooled": np.clip(X, 0, 6), "logits": X[:, :8],
           "logits_relu": np.maximum(X[:, :8], 0)}  # fmt: skip
    log = run_e3(data, eff, folds, ResultLog("E3", "synthetic", "h"), "imagenet",
                 namings=("label_free",), network="efficientnet-lite0")  # fmt: skip
    rows = log.metrics_frame().drop_duplicates("method")
    assert list(rows["method"]) == ["EffNet-L0-pool", "EffNet-L0-pool-ReLU6", "EffNet-L0-logits",
                                    "EffNet-L0-logits-ReLU"]  # fmt: skip
    assert list(rows["paper_row"]) == ["VGG-fc7", "VGG-fc7-ReLU", "VGG-fc8", "VGG-fc8-ReLU"]


def test_paper_naming_of_a_clustering_equals_a_fresh_fit(class_like):
    from tumorchar.experiments.e2_unsupervised import fit_unsupervised, renamed_clustering

    data, X = class_like
    y = data.labels
    flipped_hint = -data.naming_hint  # label-free naming now picks the wrong cluster
    label_free = fit_unsupervised("cluster", "label_free", X, None, flipped_hint, seed=3)
    fresh = fit_unsupervised("cluster", "labels", X, y, None, seed=3)
    renamed = renamed_clustering(label_free, y)
    assert renamed.malignant_cluster_ == fresh.malignant_cluster_
    assert renamed.malignant_cluster_ != label_free.malignant_cluster_
    assert np.array_equal(renamed.predict(X), fresh.predict(X))
    assert np.allclose(renamed.decision_function(X), fresh.decision_function(X))


def test_unsupervised_rows_say_their_naming_and_weights(class_like):
    from tumorchar.experiments.report import display_name

    data, X = class_like
    folds = make_folds(data.labels, data.groups, Protocol(n_splits=3))
    e2 = run_e2(data, X, folds, ResultLog("E2", "mri", "h"), rf_trees=10).metrics_frame()
    assert set(e2["naming"]) == {"label_free", "labels"}
    assert set(e2["estimator"]) == {"cluster", "svm", "rf", "psvm"}
    vgg = {"fc7": X, "fc8_relu": np.maximum(X, 0)}
    e3 = run_e3(data, vgg, folds, ResultLog("E3", "mri", "h"), "random-init").metrics_frame()
    assert set(e3["weights"]) == {"random-init"} and set(e3["feature"]) == {"fc7", "fc8_relu"}
    for frame in (e2, e3):  # the display names the report builds are the rows' own names
        first = frame.drop_duplicates("method")
        assert [display_name(r) for _, r in first.iterrows()] == first["method"].tolist()
