"""Cross-validation protocol and fold-level metrics shared by experiments E1–E4.

The paper evaluates every method with 10-fold cross-validation. Two ways of splitting:

- ``by_patient=True`` (default): stratified by class and grouped by patient
  (scikit-learn's `StratifiedGroupKFold`), so no patient's nodules are on both sides of
  a split. LIDC patients often have several nodules; splitting them leaks anatomy,
  scanner and reader habits into the test fold.
- ``by_patient=False``: the paper's plain stratified split (`StratifiedKFold`), kept so
  the difference can be shown.

Everything learned (scaling, k-means, ADASYN, the task graph, C3D fine-tuning) must be fitted
on ``train`` indices only; experiment modules receive the folds from here and nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from tumorchar.models.scoring import (
    accuracy_within_one,
    clip_scores,
    mean_absolute_score_difference,
)


@dataclass(frozen=True)
class Protocol:
    """Settings of a cross-validation run (they enter every settings hash)."""

    n_splits: int = 10
    by_patient: bool = True
    seed: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Fold:
    """One split: integer positions into the case arrays."""

    index: int
    train: np.ndarray
    test: np.ndarray


def make_folds(
    y: Sequence,
    groups: Sequence | None = None,
    protocol: Protocol = Protocol(),
) -> list[Fold]:
    """Split cases into `protocol.n_splits` stratified folds.

    With ``protocol.by_patient`` the split is grouped by ``groups`` (patient ids) and no
    group appears in two test folds; otherwise ``groups`` is ignored. Each class must have
    at least ``n_splits`` members (and, when grouping, ``n_splits`` patients).
    """
    y = np.asarray(y)
    n_splits = protocol.n_splits
    if n_splits < 2:
        raise ValueError(f"n_splits must be at least 2, got {n_splits}")
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise ValueError("stratified folds need at least two classes")
    if counts.min() < n_splits:
        small = classes[counts.argmin()]
        raise ValueError(
            f"class {small!r} has {counts.min()} cases, fewer than the {n_splits} folds"
        )
    index = np.arange(len(y))
    if protocol.by_patient:
        if groups is None:
            raise ValueError("splitting by patient needs the patient id of every case")
        groups = np.asarray(groups)
        if len(groups) != len(y):
            raise ValueError("groups and y differ in length")
        for cls in classes:
            n_patients = len(np.unique(groups[y == cls]))
            if n_patients < n_splits:
                raise ValueError(
                    f"class {cls!r} spans {n_patients} patients, fewer than the {n_splits} folds"
                )
        splitter = StratifiedGroupKFold(n_splits, shuffle=True, random_state=protocol.seed)
        splits = splitter.split(index, y, groups)
    else:
        splitter = StratifiedKFold(n_splits, shuffle=True, random_state=protocol.seed)
        splits = splitter.split(index, y)
    return [Fold(i, np.sort(train), np.sort(test)) for i, (train, test) in enumerate(splits)]


def patients_shared_between(folds: Sequence[Fold], groups: Sequence) -> set:
    """Patients whose cases fall in more than one test fold (empty when split by patient)."""
    groups = np.asarray(groups)
    seen: dict = {}
    shared = set()
    for fold in folds:
        for patient in np.unique(groups[fold.test]):
            if patient in seen and seen[patient] != fold.index:
                shared.add(patient)
            seen.setdefault(patient, fold.index)
    return shared


# --- metrics --------------------------------------------------------------------------------


def safe_auc(y_true, score) -> float:
    """ROC AUC of ``score`` for the positive class 1; NaN when a fold has one class only."""
    y_true = np.asarray(y_true)
    if score is None or len(np.unique(y_true)) < 2:
        return float("nan")
    score = np.asarray(score, dtype=float)
    if not np.all(np.isfinite(score)):
        return float("nan")
    return float(roc_auc_score(y_true, score))


def classification_metrics(y_true, y_pred, score=None) -> dict[str, float]:
    """Accuracy, sensitivity TP/(TP+FN), specificity TN/(TN+FP) and, with a score, ROC AUC.

    Labels are 1 (malignant / IPMN) and 0 (benign / normal).
    """
    y_true = np.asarray(y_true).astype(int)
    y_pred = np.asarray(y_pred).astype(int)
    positives = y_true == 1
    negatives = ~positives
    metrics = {
        "accuracy": float(np.mean(y_pred == y_true)),
        "sensitivity": float(np.mean(y_pred[positives] == 1)) if positives.any() else np.nan,
        "specificity": float(np.mean(y_pred[negatives] == 0)) if negatives.any() else np.nan,
    }
    if score is not None:
        metrics["auc"] = safe_auc(y_true, score)
    return metrics


def regression_metrics(true_scores, predicted_scores, labels=None) -> dict[str, float]:
    """E1's metrics on clipped predictions: accuracy within ±1, mean absolute score
    difference, and (beyond the paper) the benign/malignant AUC of the predicted score (taken
    before clipping, which would only add ties) and ``out_of_range``, the number of
    predictions outside [1, 5] before clipping (clipping hides them from the first two
    metrics, not from the AUC)."""
    raw = np.asarray(predicted_scores, dtype=float)
    predicted = clip_scores(raw)
    metrics = {
        "accuracy": accuracy_within_one(true_scores, predicted),
        "mean_abs_diff": mean_absolute_score_difference(true_scores, predicted),
        "out_of_range": float(np.sum(raw != predicted)),
    }
    if labels is not None:
        metrics["auc"] = safe_auc(labels, predicted_scores)
    return metrics


@dataclass(frozen=True)
class Summary:
    """Fold mean; ``ci_low``/``ci_high``: the t-interval over folds; ``nb_low``/``nb_high``:
    the Nadeau-Bengio corrected interval (NaN when it cannot be formed)."""

    mean: float
    std: float
    ci_low: float
    ci_high: float
    n: int
    nb_low: float = np.nan
    nb_high: float = np.nan


def summarize(values, confidence: float = 0.95, test_train_ratio: float | None = None) -> Summary:
    """Mean over folds with two intervals.

    - t-interval over folds: m ± t_{(1+c)/2, k−1} · s / √k, with s the sample standard
      deviation of the k fold values. It treats the folds as independent samples, but they
      share training data, so it is too narrow.
    - Nadeau-Bengio corrected interval: m ± t_{(1+c)/2, k−1} · s · √(1/k + n_test/n_train),
      which widens it for the overlap of the training sets (Nadeau & Bengio, Machine Learning
      52, 2003). ``test_train_ratio`` is n_test/n_train; by default 1/(k − 1), the ratio of
      k-fold cross-validation.

    NaN fold values (e.g. an AUC on a one-class fold) are left out."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    k = len(values)
    if k == 0:
        return Summary(np.nan, np.nan, np.nan, np.nan, 0)
    mean = float(values.mean())
    if k == 1:
        return Summary(mean, np.nan, np.nan, np.nan, 1)
    std = float(values.std(ddof=1))
    quantile = float(stats.t.ppf((1 + confidence) / 2, k - 1))
    half = quantile * std / np.sqrt(k)
    ratio = 1.0 / (k - 1) if test_train_ratio is None else float(test_train_ratio)
    nb_half = quantile * std * np.sqrt(1.0 / k + ratio)
    return Summary(mean, std, mean - half, mean + half, k, mean - nb_half, mean + nb_half)


# --- features per fold ----------------------------------------------------------------------


class FoldFeatures:
    """Features whose computation learns from data (e.g. C3D fine-tuned on the training
    fold): ``compute(fold) -> (X_train, X_test)`` is called once per fold and must use only
    ``fold.train`` cases for anything it learns."""

    def __init__(self, compute, label: str = ""):
        self.compute = compute
        self.label = label

    def split(self, fold: Fold) -> tuple[np.ndarray, np.ndarray]:
        X_train, X_test = self.compute(fold)
        return np.asarray(X_train, float), np.asarray(X_test, float)


def split_features(features, fold: Fold) -> tuple[np.ndarray, np.ndarray]:
    """Training and test rows of a fixed (n, d) feature array or of a `FoldFeatures`."""
    if isinstance(features, FoldFeatures):
        return features.split(fold)
    features = np.asarray(features, dtype=float)
    if features.ndim == 1:
        features = features[:, None]
    return features[fold.train], features[fold.test]
