"""Named model recipes: one definition of each model the experiments evaluate and `train`
ships. A recipe builds a fresh, unfitted scikit-learn estimator and fits it the one way
that model is meant to be fitted (the proposed MTL with the readers' inconsistency Ψ of
paper Eq. 5 for the training cases; Ψ is unknown for new cases, so prediction uses its
training mean, see `GraphSparseMTL`).

E1's rows and `tumorchar train mtl` both call ``recipe.fit``; the bundle's manifest names
the recipe. Adding a model = one `ModelRecipe` in `RECIPES`. Every pipeline drops
near-constant units before standardising; every inner cross-validation (Lasso / Ridge
strength, the proposed model's ρ) is grouped by patient when the recipe gets the patients.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

RIDGE_ALPHAS = np.logspace(-2, 5, 15)
# The reference toolbox (MALSAR) stops when the relative objective change is below 1e-4.
MTL_TOL = 1e-4
PAPER_RHO = {"rho1": 1.0, "rho2": 10.0}  # Eq. 6 penalties of the paper's proposed model


INNER_SPLITS = 3  # inner cross-validation (Lasso / Ridge / MTL strengths), by patient


def inner_splits(groups, n_splits: int = INNER_SPLITS) -> list:
    """`GroupKFold` splits of a training fold's rows by patient (no patient on both sides)."""
    from sklearn.model_selection import GroupKFold

    groups = np.asarray(groups)
    splitter = GroupKFold(min(n_splits, len(np.unique(groups))))
    return list(splitter.split(np.zeros(len(groups)), groups=groups))


@dataclass(frozen=True)
class ModelRecipe:
    """``build(groups, **params)`` → a fresh pipeline (dead-unit filter + standardization +
    model; ``groups`` are the training rows' patients, for inner cross-validation by
    patient); ``multitask`` models are fitted on all 7 scores, the others on malignancy;
    ``uses_psi`` models take the training cases' Ψ (n, 7) as a ``fit`` keyword, and
    ``fit_groups`` models take the patients as a ``fit`` keyword too."""

    name: str
    build: Callable[..., Any]
    multitask: bool = False
    uses_psi: bool = False
    fit_groups: bool = False
    params: dict[str, Any] = field(default_factory=dict)

    def estimator(self, groups: np.ndarray | None = None):
        """An unfitted estimator for a training set whose patients are ``groups``."""
        return self.build(groups, **self.params)

    def fit_params(self, estimator, psi=None, groups=None) -> dict[str, Any]:
        """Keyword arguments of ``estimator.fit`` (routed to the pipeline's last step)."""
        step = estimator.steps[-1][0] if hasattr(estimator, "steps") else None
        params = {}
        if self.uses_psi and psi is not None:
            params["psi"] = psi
        if self.fit_groups and groups is not None:
            params["groups"] = groups
        return {f"{step}__{k}" if step else k: v for k, v in params.items()}

    def fit(self, X, y, psi: np.ndarray | None = None, groups: np.ndarray | None = None):
        """Fit on ``X`` and ``y`` ((n, 7) scores for multi-task recipes, else (n,));
        ``psi`` are the training rows' Eq. 5 values (used by ``uses_psi`` recipes only),
        ``groups`` their patients (inner cross-validation; without them, plain K-fold)."""
        model = self.estimator(groups)
        return model.fit(X, y, **self.fit_params(model, psi, groups))

    def with_params(self, **params) -> ModelRecipe:
        """The same recipe with other hyper-parameters (ρ1, ρ2, ...)."""
        return ModelRecipe(self.name, self.build, self.multitask, self.uses_psi,
                           self.fit_groups, {**self.params, **params})  # fmt: skip

    def describe(self) -> dict[str, Any]:
        return {"recipe": self.name, "multitask": self.multitask, "uses_psi": self.uses_psi,
                "params": dict(self.params)}  # fmt: skip


def _cleaned(model):
    """Near-constant (dead) units dropped on the training rows, then standardised: a unit
    that fired for one training case would otherwise sit thousands of SD out on a test case
    (`tumorchar.models.preprocessing`)."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from tumorchar.models.preprocessing import NearConstantFilter

    return make_pipeline(NearConstantFilter(), StandardScaler(), model)


def _cv(groups):
    return INNER_SPLITS if groups is None else inner_splits(groups)


def _lasso(groups=None):
    """Lasso with its strength chosen by 3-fold CV inside the training fold (grouped by
    patient when the patients are known), on a path of 20 values from α_max to α_max / 100."""
    from sklearn.linear_model import LassoCV

    return _cleaned(LassoCV(alphas=20, eps=1e-2, cv=_cv(groups), max_iter=5000, tol=1e-3))


def _ridge(groups=None):
    from sklearn.linear_model import RidgeCV

    return _cleaned(RidgeCV(alphas=RIDGE_ALPHAS, cv=None if groups is None else _cv(groups)))


def _linear(_groups=None):
    from sklearn.linear_model import LinearRegression

    return _cleaned(LinearRegression())


def _graph_sparse_mtl(_groups=None, rho1=1.0, rho2=10.0, loss="sum"):
    """Paper Eq. 6 at fixed ρ: graph-regularized sparse MTL, task graph estimated on the
    training fold, Ψ (Eq. 5) in the design when given to ``fit``, its training mean at
    prediction."""
    from tumorchar.models import GraphSparseMTL

    return _cleaned(
        GraphSparseMTL(
            rho1=rho1, rho2=rho2, graph="auto", loss=loss, fit_intercept=True, tol=MTL_TOL
        )  # fmt: skip
    )


def _graph_sparse_mtl_cv(_groups=None, score_tasks=(0,)):
    """Paper Eq. 6 on the mean loss with (ρ1, ρ2) chosen by inner cross-validation grouped
    by patient (`GraphSparseMTLCV`), held-out error scored on malignancy."""
    from tumorchar.models.mtl_cv import GraphSparseMTLCV

    return _cleaned(GraphSparseMTLCV(score_tasks=score_tasks, tol=MTL_TOL, random_state=0))


def _trace_norm_mtl(_groups=None, rho=10.0):
    """Paper Eq. 2: trace-norm regularized MTL."""
    from tumorchar.models import TraceNormMTL

    return _cleaned(TraceNormMTL(rho=rho, fit_intercept=True, tol=MTL_TOL))


def _unsupervised(_groups=None, **options):
    """k-means (k = 2) → label-free cluster naming → ∝SVM (E2 / E3 / `train unsupervised`)."""
    from tumorchar.models.unsupervised import UnsupervisedClassifier

    return UnsupervisedClassifier(**({"method": "psvm", "naming": "label_free"} | options))


PROPOSED_MTL = ModelRecipe(
    "graph-sparse-mtl-cv", _graph_sparse_mtl_cv, multitask=True, uses_psi=True, fit_groups=True
)
MTL_WITHOUT_PSI = ModelRecipe(
    "graph-sparse-mtl-cv-without-psi", _graph_sparse_mtl_cv, multitask=True, fit_groups=True
)
PAPER_RHO_MTL = ModelRecipe(
    "graph-sparse-mtl", _graph_sparse_mtl, multitask=True, uses_psi=True, params=dict(PAPER_RHO)
)
TRACE_NORM_MTL = ModelRecipe("trace-norm-mtl", _trace_norm_mtl, multitask=True)
LASSO = ModelRecipe("lasso", _lasso)
RIDGE = ModelRecipe("ridge", _ridge)
LINEAR = ModelRecipe("linear", _linear)
UNSUPERVISED = ModelRecipe("unsupervised-psvm", _unsupervised)

RECIPES: dict[str, ModelRecipe] = {
    r.name: r
    for r in (
        PROPOSED_MTL, MTL_WITHOUT_PSI, PAPER_RHO_MTL, TRACE_NORM_MTL, LASSO, RIDGE, LINEAR,
        UNSUPERVISED,
    )
}  # fmt: skip


def psi_or_none(psi: np.ndarray | None) -> np.ndarray | None:
    """Ψ as the proposed recipe takes it: None when any value is missing (a store or cohort
    without every reader's ratings), as E1 does."""
    if psi is None:
        return None
    psi = np.asarray(psi, dtype=float)
    return psi if psi.size and np.isfinite(psi).all() else None
