"""Named model recipes: one definition of each model the experiments evaluate and `train`
ships. A recipe builds a fresh, unfitted scikit-learn estimator and fits it the one way
that model is meant to be fitted (the proposed MTL with the readers' inconsistency Ψ of
paper Eq. 5 for the training cases; Ψ is unknown for new cases, so prediction goes without).

E1's rows and `tumorchar train mtl` both call ``recipe.fit``; the bundle's manifest names
the recipe. Adding a model = one `ModelRecipe` in `RECIPES`.
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


@dataclass(frozen=True)
class ModelRecipe:
    """``build(psi_train)`` → a fresh pipeline (standardization + model); ``multitask``
    models are fitted on all 7 scores, the others on malignancy; ``uses_psi`` models take
    the training cases' Ψ (n, 7)."""

    name: str
    build: Callable[..., Any]
    multitask: bool = False
    uses_psi: bool = False
    params: dict[str, Any] = field(default_factory=dict)

    def estimator(self, psi_train: np.ndarray | None = None):
        """An unfitted estimator for a training set whose Ψ is ``psi_train``."""
        return self.build(psi_train if self.uses_psi else None, **self.params)

    def fit(self, X, y, psi: np.ndarray | None = None):
        """Fit on ``X`` and ``y`` ((n, 7) scores for multi-task recipes, else (n,));
        ``psi`` are the training rows' Eq. 5 values (used by ``uses_psi`` recipes only).
        E1's folds and `tumorchar train` both fit through here."""
        estimator = self.estimator(psi)
        return estimator.fit(X, y, **self._fit_params(estimator, psi))

    def _fit_params(self, estimator, psi) -> dict[str, Any]:
        """Ψ as a fit parameter, for an MTL whose ``fit`` takes it (per-sample data belong
        to ``fit``); an MTL that takes Ψ in its constructor got it in `build`."""
        if not self.uses_psi or psi is None:
            return {}
        steps = getattr(estimator, "steps", None)
        final = steps[-1][1] if steps else estimator
        if "psi" in final.get_params():
            return {}
        return {f"{steps[-1][0]}__psi": psi} if steps else {"psi": psi}

    def with_params(self, **params) -> ModelRecipe:
        """The same recipe with other hyper-parameters (ρ1, ρ2, ...)."""
        return ModelRecipe(self.name, self.build, self.multitask, self.uses_psi,
                           {**self.params, **params})  # fmt: skip

    def describe(self) -> dict[str, Any]:
        return {"recipe": self.name, "multitask": self.multitask, "uses_psi": self.uses_psi,
                "params": dict(self.params)}  # fmt: skip


def _scaled(model):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), model)


def _lasso(_psi=None):
    """Lasso with its strength chosen by 3-fold CV inside the training fold, on a path of 20
    values from α_max down to α_max / 100."""
    from sklearn.linear_model import LassoCV

    return _scaled(LassoCV(alphas=20, eps=1e-2, cv=3, max_iter=5000, tol=1e-3))


def _ridge(_psi=None):
    from sklearn.linear_model import RidgeCV

    return _scaled(RidgeCV(alphas=RIDGE_ALPHAS))


def _linear(_psi=None):
    from sklearn.linear_model import LinearRegression

    return _scaled(LinearRegression())


def _graph_sparse_mtl(psi_train=None, rho1=1.0, rho2=10.0):
    """Paper Eq. 6: graph-regularized sparse MTL, task graph estimated on the training fold,
    loss weighted by the training cases' Ψ (Eq. 5) when given."""
    from tumorchar.models import GraphSparseMTL

    mtl = GraphSparseMTL(rho1=rho1, rho2=rho2, graph="auto", fit_intercept=True, tol=MTL_TOL)
    if "psi" in mtl.get_params():  # Ψ as a constructor parameter (else `fit` takes it)
        mtl.set_params(psi=psi_train)
    return _scaled(mtl)


def _trace_norm_mtl(_psi=None, rho=10.0):
    """Paper Eq. 2: trace-norm regularized MTL."""
    from tumorchar.models import TraceNormMTL

    return _scaled(TraceNormMTL(rho=rho, fit_intercept=True, tol=MTL_TOL))


def _unsupervised(_psi=None, **options):
    """k-means (k = 2) → label-free cluster naming → ∝SVM (E2 / E3 / `train unsupervised`)."""
    from tumorchar.models.unsupervised import UnsupervisedClassifier

    return UnsupervisedClassifier(**({"method": "psvm", "naming": "label_free"} | options))


PROPOSED_MTL = ModelRecipe(
    "graph-sparse-mtl", _graph_sparse_mtl, multitask=True, uses_psi=True, params=dict(PAPER_RHO)
)
MTL_WITHOUT_PSI = ModelRecipe(
    "graph-sparse-mtl-without-psi", _graph_sparse_mtl, multitask=True, params=dict(PAPER_RHO)
)
TRACE_NORM_MTL = ModelRecipe("trace-norm-mtl", _trace_norm_mtl, multitask=True)
LASSO = ModelRecipe("lasso", _lasso)
RIDGE = ModelRecipe("ridge", _ridge)
LINEAR = ModelRecipe("linear", _linear)
UNSUPERVISED = ModelRecipe("unsupervised-psvm", _unsupervised)

RECIPES: dict[str, ModelRecipe] = {
    r.name: r
    for r in (PROPOSED_MTL, MTL_WITHOUT_PSI, TRACE_NORM_MTL, LASSO, RIDGE, LINEAR, UNSUPERVISED)
}


def psi_or_none(psi: np.ndarray | None) -> np.ndarray | None:
    """Ψ as the proposed recipe takes it: None when any value is missing (a store or cohort
    without every reader's ratings), as E1 does."""
    if psi is None:
        return None
    psi = np.asarray(psi, dtype=float)
    return psi if psi.size and np.isfinite(psi).all() else None
