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

from collections.abc import Callable, Mapping

import numpy as np

from tumorchar.experiments.e4_upper_bound import ClassData
from tumorchar.experiments.protocol import Fold, classification_metrics, split_features
from tumorchar.experiments.results import ResultLog

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


def fit_predict_unsupervised(
    classifier: str,
    naming: str,
    X_train: np.ndarray,
    X_test: np.ndarray,
    y_train: np.ndarray | None,
    hint_train: np.ndarray | None,
    seed: int,
    rf_trees: int = 100,
    psvm_restarts: int = 10,
) -> tuple[np.ndarray, np.ndarray]:
    """Fit `tumorchar.models.unsupervised.UnsupervisedClassifier` on the training fold and
    return (predicted labels, malignancy score) for the test fold.

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
        model.fit(X_train, y=y_train)
    else:
        if hint_train is None:
            raise ValueError("label-free cluster naming needs a naming hint per case")
        model.fit(X_train, naming_score=hint_train)
    score = np.asarray(model.decision_function(X_test), float)
    return np.asarray(model.predict(X_test), int), score


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
) -> ResultLog:
    """Cross-validate ``methods`` (display name → (feature key, classifier, paper row)) for
    every naming rule; metrics and predictions go into ``log``."""
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
            for naming in namings:
                method = name + NAMINGS[naming]
                if on_step:
                    on_step(f"{experiment} {log.dataset} fold {fold.index + 1}: {method}")
                hint = None if data.naming_hint is None else data.naming_hint[fold.train]
                predicted, score = fit_predict_unsupervised(
                    classifier,
                    naming,
                    X_train,
                    X_test,
                    labels[fold.train] if naming == "labels" else None,
                    hint,
                    seed + fold.index,
                    rf_trees,
                    psvm_restarts,
                )
                metrics = classification_metrics(labels[fold.test], predicted, score)
                log.add_metrics(method, fold.index, metrics, paper_row)
                log.add_predictions(
                    method,
                    fold.index,
                    data.case_ids[fold.test],
                    labels[fold.test],
                    score,
                    predicted,
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
