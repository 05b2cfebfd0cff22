"""Readers' inconsistency Ψ of paper Eq. 5, defined once (the cohort computes it per nodule
and task; the proposed MTL weights its loss with it)."""

from __future__ import annotations

import numpy as np


def radiologist_inconsistency(ratings) -> np.ndarray:
    """Ψ = (exp(−Σ_r (x_r − μ)² / (2σ)))⁻¹ = exp(Σ_r (x_r − μ)² / (2σ)) along the last axis.

    μ and σ are the mean and population standard deviation of the available (non-NaN) scores
    of the R readers. Because Σ_r (x_r − μ)² = R σ², Ψ = exp(R σ / 2); when all readers agree
    (σ = 0) the ratio is 0/0 and Ψ is its limit, 1 (no inconsistency). A 1-D input is one
    sample (a 0-d result); an (n, R) input gives n values.
    """
    x = np.asarray(ratings, dtype=float)
    if x.ndim == 0:
        raise ValueError("ratings must hold the scores of R readers along the last axis")
    if np.isinf(x).any():
        raise ValueError("ratings contain infinite values")
    counts = np.sum(~np.isnan(x), axis=-1)
    if np.any(counts == 0):
        empty = np.flatnonzero(np.atleast_1d(counts) == 0).tolist()
        raise ValueError(f"samples without any rating: {empty}")
    mu = np.nanmean(x, axis=-1, keepdims=True)
    sq = np.nansum((x - mu) ** 2, axis=-1)
    sigma = np.sqrt(sq / counts)
    ratio = np.divide(sq, 2.0 * sigma, out=np.zeros_like(sq), where=sigma > 0)
    return np.exp(ratio)
