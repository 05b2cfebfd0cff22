"""Feature cleaning fitted inside the training fold: drop near-constant (dead) units.

A ReLU unit of a network layer that fired for one training case has a tiny standard
deviation; standardised, a test case where it fires lands thousands of standard
deviations out (5,813 SD on a phantom fold) and drives a linear model's prediction far
off the score scale (104-334 on the 1-5 scale). `NearConstantFilter` removes such units
before scaling, from the training rows only:

    keep column j  <=>  #{u : |x_uj - median_j| > atol} >= max(min_count, ceil(min_share n))

i.e. at least `min_share` (default 1 %) of the n training cases, and never fewer than
`min_count` (default 5), must differ from the column's median. A dead unit (all zero) or
one that fired for up to 4 cases (or 1 % of the cases) is dropped; a continuous feature
(GIST) differs from its median almost everywhere and is kept.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.feature_selection import SelectorMixin
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted, validate_data

DEFAULT_MIN_SHARE = 0.01
DEFAULT_MIN_COUNT = 5


class NearConstantFilter(SelectorMixin, BaseEstimator):
    """Keep the columns that vary in enough training cases (module docstring).

    Parameters: ``min_share`` (in [0, 1]), ``min_count`` (>= 1), ``atol`` (>= 0).
    Fitted: ``n_active_`` (per column, the number of training cases away from the median),
    ``min_active_`` (the threshold applied), ``support_`` (kept columns),
    ``n_features_in_``. A fit that would keep no column raises ValueError.
    """

    _parameter_constraints: dict = {
        "min_share": [Interval(Real, 0, 1, closed="both")],
        "min_count": [Interval(Integral, 1, None, closed="left")],
        "atol": [Interval(Real, 0, None, closed="left")],
    }

    def __init__(self, min_share=DEFAULT_MIN_SHARE, min_count=DEFAULT_MIN_COUNT, atol=0.0):
        self.min_share = min_share
        self.min_count = min_count
        self.atol = atol

    def fit(self, X, y=None):
        """Count, per column, the training cases away from the median; y is ignored."""
        self._validate_params()
        X = validate_data(self, X, dtype=np.float64)
        n = X.shape[0]
        if n < 2:
            raise ValueError(f"a feature's spread needs at least 2 samples; got {n} sample")
        median = np.median(X, axis=0)
        self.n_active_ = np.sum(np.abs(X - median) > self.atol, axis=0)
        self.min_active_ = min(n, max(int(self.min_count), math.ceil(self.min_share * n)))
        self.support_ = self.n_active_ >= self.min_active_
        if not self.support_.any():
            raise ValueError(
                f"no feature differs from its median in at least {self.min_active_} of the "
                f"{n} training cases: nothing is left to learn from"
            )
        return self

    def _get_support_mask(self):
        check_is_fitted(self, "support_")
        return self.support_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags
