"""Score helpers of experiment E1 (paper section V-C, Table II).

Predicted malignancy/attribute scores live on the radiologists' 1-5 scale; a prediction
counts as correct when it lies within +-1 of the mean radiologist score, and the
regression error is the mean absolute difference between predicted and true scores.
"""

from __future__ import annotations

import numpy as np

# Tolerance for |prediction - truth| <= 1: means of reader scores (e.g. 2.333...) carry
# rounding error, and a difference of exactly one score point must count as within one.
_WITHIN_ONE_SLACK = 1e-9


def _paired(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true, dtype=float)
    p = np.asarray(y_pred, dtype=float)
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred have different shapes: {t.shape} vs {p.shape}")
    if t.size == 0:
        raise ValueError("y_true and y_pred are empty")
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(p))):
        raise ValueError("y_true and y_pred must be finite")
    return t, p


def clip_scores(y_pred, low: float = 1.0, high: float = 5.0) -> np.ndarray:
    """Clip predictions to the score range [low, high] (the radiologists' 1-5 scale)."""
    if low > high:
        raise ValueError(f"low ({low}) must not exceed high ({high})")
    return np.clip(np.asarray(y_pred, dtype=float), low, high)


def accuracy_within_one(y_true, y_pred) -> float:
    """Share of predictions with |y_pred - y_true| <= 1 (over all entries of the arrays)."""
    t, p = _paired(y_true, y_pred)
    return float(np.mean(np.abs(p - t) <= 1.0 + _WITHIN_ONE_SLACK))


def mean_absolute_score_difference(y_true, y_pred) -> float:
    """Mean of |y_pred - y_true| over all entries."""
    t, p = _paired(y_true, y_pred)
    return float(np.mean(np.abs(p - t)))
