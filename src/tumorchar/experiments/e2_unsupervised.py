"""Experiment E2 (paper Table III): unsupervised benign/malignant (normal/IPMN) classification
with GIST features.

Four methods, each fitted on the training fold without its labels: k-means clustering (k = 2),
clustering + linear SVM, clustering + random forest (both trained on the cluster assignments),
and clustering + ∝SVM (the proposed: the clusters are bags whose label proportions, Eq. 9,
train a proportion-SVM). Which cluster is "malignant" is decided

- label-free (default): by a per-case prior (``ClassData.naming_hint``: e.g. the larger
  nodules are malignant), never looking at the labels;
- by the paper's protocol (marked rows): the training-fold labels name the clusters.

The ground-truth labels of the test fold are used only to score.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping

import numpy as np

from tumorchar.experiments.e4_upper_bound import ClassData
from tumorchar.experiments.protocol import Fold, classification_metrics, split_features
from tumorchar.experiments.results import MethodLabels, ResultLog

# display name → (classifier trained after clustering, paper's row)
METHODS = {
    "Clustering": ("cluster", "Clustering"),
    "Clustering + SVM": ("svm", "Clustering + SVM"),
    "Clustering + RF": ("rf", "Clustering + RF"),
    "Clustering + ∝SVM (proposed)": ("psvm", "Proposed"),
}
NAMINGS = {
    "label_free": "",
    "labels": " [paper protocol: clusters named with training labels]",
}


def fit_unsupervised(
    classifier: str,
    naming: str,
    X_train: np.ndarray,
    y_train: np.ndarray | None,
    hint_train: np.ndarray | None,
    seed: int,
    rf_trees: int = 100,
    psvm_restarts: int = 10,
):
    """`tumorchar.models.unsupervised.UnsupervisedClassifier` fitted on the training fold.

    ``y_train`` reaches the pipeline only with ``naming="labels"`` (the paper's protocol)."""
    from tumorchar.models.unsupervised import UnsupervisedClassifier

    model = UnsupervisedClassifier(
        method=classifier,
        naming=naming,
        n_estimators=rf_trees,
        n_restarts=psvm_restarts,
        random_state=seed,
    )
    if naming == "labels":
        return model.fit(X_train, y=y_train)
    if hint_train is None:
        raise ValueError("label-free cluster naming needs a naming hint per case")
    return model.fit(X_train, naming_score=hint_train)


def renamed_clustering(model, y_train: np.ndarray):
    """The paper's naming of an already fitted ``method="cluster"`` model: the same k-means
    (naming does not change it), the cluster with the larger malignant share named malignant.
    Saves a second k-means fit that would give identical clusters."""
    from tumorchar.models.unsupervised import name_clusters_with_labels

    renamed = copy.copy(model)
    clusters = model.kmeans_.labels_
    renamed.naming = "labels"
    renamed.malignant_cluster_ = name_clusters_with_labels(clusters, np.asarray(y_train))
    renamed.cluster_labels_ = (clusters == renamed.malignant_cluster_).astype(np.int64)
    return renamed


def run_unsupervised(
    experiment: str,
    data: ClassData,
    features: Mapping[str, object],
    methods: Mapping[str, tuple[str, str, str]],
    folds: list[Fold],
    log: ResultLog,
    namings: tuple[str, ...] = ("label_free", "labels"),
    seed: int = 0,
    on_step: Callable[[str], None] | None = None,
    rf_trees: int = 100,
    psvm_restarts: int = 10,
    weights: str = "",
) -> ResultLog:
    """Cross-validate ``methods`` (display name → (feature key, classifier, paper row)) for
    every naming rule; metrics and predictions go into ``log``. ``weights`` labels the
    network behind the features (VGG), "" for GIST."""
    labels = np.asarray(data.labels, int)
    if "label_free" in namings and data.naming_hint is None:
        namings = tuple(n for n in namings if n != "label_free")
    for fold in folds:
        splits = {}
        for name, (feature, classifier, paper_row) in methods.items():
            if feature not in features:
                continue
            if feature not in splits:
                splits[feature] = split_features(features[feature], fold)
            X_train, X_test = splits[feature]
            hint = None if data.naming_hint is None else data.naming_hint[fold.train]
            fitted = None
            for naming in namings:
                method = name + NAMINGS[naming]
                if on_step:
                    on_step(f"{experiment} {log.dataset} fold {fold.index + 1}: {method}")
                if classifier == "cluster" and fitted is not None and naming == "labels":
                    model = renamed_clustering(fitted, labels[fold.train])
                else:
                    y_train = labels[fold.train] if naming == "labels" else None
                    model = fit_unsupervised(
                        classifier,
                        naming,
                        X_train,
                        y_train,
                        hint,
                        seed + fold.index,
                        rf_trees,
                        psvm_restarts,
                    )
                    fitted = model
                score = np.asarray(model.decision_function(X_test), float)
                predicted = np.asarray(model.predict(X_test), int)
                metrics = classification_metrics(labels[fold.test], predicted, score)
                log.add_fold(
                    method,
                    fold.index,
                    metrics,
                    paper_row,
                    data.case_ids[fold.test],
                    labels[fold.test],
                    score,
                    predicted,
                    labels=MethodLabels(feature, classifier, naming, weights),
                )
    return log


def run_e2(
    data: ClassData,
    gist_features,
    folds: list[Fold],
    log: ResultLog,
    namings: tuple[str, ...] = ("label_free", "labels"),
    seed: int = 0,
    on_step: Callable[[str], None] | None = None,
    rf_trees: int = 100,
    psvm_restarts: int = 10,
) -> ResultLog:
    """Table III on GIST features (an (n, 512) array)."""
    methods = {name: ("gist", clf, row) for name, (clf, row) in METHODS.items()}
    return run_unsupervised(
        "E2",
        data,
        {"gist": gist_features},
        methods,
        folds,
        log,
        namings,
        seed,
        on_step,
        rf_trees,
        psvm_restarts,
    )
