"""Experiment E4 (paper Table IV): the supervised upper bound of the unsupervised methods.

Linear SVM and random forest, trained with the ground-truth labels on the same folds as E2,
on GIST, VGG fc7 and VGG fc8 (after ReLU, as in the paper). For the MRI path, whose classes are
unbalanced (38 normal vs 133 IPMN in the paper), ADASYN oversampling of the minority class is
applied to the training fold only, inside the pipeline, after standardization.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from tumorchar.experiments.protocol import Fold, classification_metrics, split_features
from tumorchar.experiments.results import MethodLabels, ResultLog

FEATURES = {"GIST": "gist", "VGG-fc7": "fc7_relu", "VGG-fc8": "fc8_relu"}
#: Stand-ins for the paper's VGG rows when no ImageNet VGG16 file is given: display name →
#: (feature key, the paper's row). EfficientNet-Lite0 pooled (after ReLU6) ≈ fc7 after ReLU,
#: its logits after ReLU ≈ fc8 after ReLU; I3D static-clip Mixed_5c ≈ fc7 after ReLU.
PRETRAINED_FEATURES = {
    "EffNet-L0-pool": ("efficientnet-lite0/pooled", "VGG-fc7"),
    "EffNet-L0-logits": ("efficientnet-lite0/logits_relu", "VGG-fc8"),
    "I3D-static-Mixed5c": ("i3d-static/mixed_5c", "VGG-fc7"),
}


@dataclass(frozen=True)
class ClassData:
    """Per-case inputs of E2–E4: labels 1 (malignant / IPMN) or 0 (benign / normal),
    patient ids, and, for label-free cluster naming, one value per case that is larger for
    the positive class by prior knowledge (e.g. nodule diameter)."""

    case_ids: np.ndarray
    labels: np.ndarray
    groups: np.ndarray
    naming_hint: np.ndarray | None = None

    def __post_init__(self):
        n = len(self.case_ids)
        if len(self.labels) != n or len(self.groups) != n:
            raise ValueError("case_ids, labels and groups must have the same length")
        if self.naming_hint is not None and len(self.naming_hint) != n:
            raise ValueError("naming_hint must have one value per case")


def build_classifier(name: str, oversample: bool, seed: int, rf_trees: int = 100):
    """Standardize → (ADASYN) → linear SVM or random forest, as one pipeline."""
    if name == "SVM":
        classifier = LinearSVC(C=1.0, max_iter=10_000, random_state=seed)
    elif name == "RF":
        classifier = RandomForestClassifier(n_estimators=rf_trees, n_jobs=1, random_state=seed)
    else:
        raise ValueError(f"unknown classifier {name!r}; use 'SVM' or 'RF'")
    if not oversample:
        return make_pipeline(StandardScaler(), classifier)
    from imblearn.pipeline import make_pipeline as make_imb_pipeline

    return make_imb_pipeline(StandardScaler(), _Adasyn(seed), classifier)


class _Adasyn(BaseEstimator):
    """ADASYN that steps aside when the training fold is already balanced or its minority
    class is too small for the neighbourhood (imbalanced-learn raises in both cases)."""

    def __init__(self, seed: int = 0, n_neighbors: int = 5):
        self.seed = seed
        self.n_neighbors = n_neighbors

    def fit_resample(self, X, y):
        from imblearn.over_sampling import ADASYN

        counts = np.bincount(np.asarray(y, int), minlength=2)
        if counts.min() == counts.max() or counts.min() <= self.n_neighbors:
            return X, y
        try:
            sampler = ADASYN(random_state=self.seed, n_neighbors=self.n_neighbors)
            return sampler.fit_resample(X, y)
        except (ValueError, RuntimeError):
            # ADASYN finds no minority case with majority neighbours: nothing to synthesize.
            return X, y


def classifier_score(model, X) -> np.ndarray:
    """A continuous score for the positive class (for the ROC AUC)."""
    if hasattr(model, "decision_function"):
        return np.asarray(model.decision_function(X), float)
    return np.asarray(model.predict_proba(X), float)[:, 1]


def run_e4(
    data: ClassData,
    features: Mapping[str, object],
    folds: list[Fold],
    log: ResultLog,
    oversample: bool = False,
    seed: int = 0,
    feature_label: Mapping[str, str] | None = None,
    rf_trees: int = 100,
    on_step: Callable[[str], None] | None = None,
) -> ResultLog:
    """Cross-validate SVM and RF on each available feature of `FEATURES` and
    `PRETRAINED_FEATURES`.

    ``features`` maps "gist", "fc7_relu", "fc8_relu" (VGG) and the keys of
    `PRETRAINED_FEATURES` to (n, d) arrays; ``feature_label`` optionally tags a feature in
    the method name unless pretrained (e.g. {"fc7_relu": "random-init"}) and is the rows'
    weights label (default "imagenet" for network features)."""
    feature_label = feature_label or {}
    labels = np.asarray(data.labels, int)
    rows = {display: (key, display) for display, key in FEATURES.items()}
    rows |= PRETRAINED_FEATURES
    for fold in folds:
        for display, (key, paper_display) in rows.items():
            if key not in features:
                continue
            X_train, X_test = split_features(features[key], fold)
            label = feature_label.get(key, "" if key == "gist" else "imagenet")
            pretrained = label in ("", "imagenet", "kinetics400")
            tag = "" if pretrained else f" ({label})"
            for classifier in ("SVM", "RF"):
                method = f"{display}{tag} + {classifier}"
                if on_step:
                    on_step(f"E4 {log.dataset} fold {fold.index + 1}/{len(folds)}: {method}")
                model = build_classifier(classifier, oversample, seed + fold.index, rf_trees)
                model.fit(X_train, labels[fold.train])
                predicted = model.predict(X_test)
                score = classifier_score(model, X_test)
                metrics = classification_metrics(labels[fold.test], predicted, score)
                log.add_fold(
                    method,
                    fold.index,
                    metrics,
                    f"{paper_display} + {classifier}",
                    data.case_ids[fold.test],
                    labels[fold.test],
                    score,
                    predicted,
                    labels=MethodLabels(
                        key,
                        classifier.lower(),
                        weights=label,
                        variant="adasyn" if oversample else "",
                    ),
                )
    return log
