"""Multi-task regression estimators of the paper: graph-regularized sparse MTL (Eq. 6) and
trace-norm MTL (Eq. 2), solved by accelerated proximal gradient (`tumorchar.models.apg`).

Both take X as one (n, d) array shared by the M tasks or as a list of M (n, d) arrays (one
design per task), and Y as (n, M); a 1-D y is one task and gives 1-D `coef_` and
predictions, as scikit-learn's linear models do.
"""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, MultiOutputMixin, RegressorMixin
from sklearn.utils import check_array
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from tumorchar.models.apg import (
    L1Penalty,
    MultiTaskQuadratic,
    TraceNormPenalty,
    apg,
    apg_working_set,
    graph_laplacian,
)
from tumorchar.models.inconsistency import radiologist_inconsistency  # noqa: F401 (re-exported)
from tumorchar.models.taskgraph import estimate_task_graph, validate_graph


def _is_per_task(X) -> bool:
    """A list/tuple of 2-D arrays is one design per task; anything else is a shared X."""
    return isinstance(X, list | tuple) and len(X) > 0 and all(np.ndim(x) == 2 for x in X)


def _check_per_task_X(X, n_tasks: int | None, n_features: int | None = None):
    Xs = [check_array(x, dtype=np.float64, input_name=f"X[{i}]") for i, x in enumerate(X)]
    if n_tasks is not None and len(Xs) != n_tasks:
        raise ValueError(f"X is a list of {len(Xs)} designs but there are {n_tasks} tasks")
    widths = {x.shape[1] for x in Xs}
    if len(widths) != 1:
        raise ValueError(f"the per-task designs have different numbers of features: {widths}")
    if n_features is not None and Xs[0].shape[1] != n_features:
        raise ValueError(f"X has {Xs[0].shape[1]} features, but the model expects {n_features}")
    return Xs


def _check_psi(psi, n_samples: int, n_tasks: int, single: bool) -> np.ndarray | None:
    if psi is None:
        return None
    P = check_array(psi, dtype=np.float64, ensure_2d=False, input_name="psi")
    if single and P.ndim == 1:
        P = P[:, None]
    if P.shape != (n_samples, n_tasks):
        raise ValueError(f"psi must have shape {(n_samples, n_tasks)} like Y, got {P.shape}")
    return P


def _build_smooth(Xs, Y2, psi, per_task, laplacian=None, rho1=0.0) -> MultiTaskQuadratic:
    """Smooth part of the objective from a shared design or a list of per-task designs."""
    if per_task:
        targets = [Y2[:, i] for i in range(Y2.shape[1])]
        psis = None if psi is None else [psi[:, i] for i in range(psi.shape[1])]
        return MultiTaskQuadratic(Xs, targets, laplacian=laplacian, rho1=rho1, psi=psis)
    return MultiTaskQuadratic(Xs, Y2, laplacian=laplacian, rho1=rho1, psi=psi)


class _BaseMTL(MultiOutputMixin, RegressorMixin, BaseEstimator):
    """Shared fit/predict plumbing: validation, centring for the intercept, APG call."""

    _parameter_constraints: dict = {
        "fit_intercept": ["boolean"],
        "tol": [Interval(Real, 0, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
    }

    def _validate_training(self, X, Y):
        """Return (Xs, Y2, per_task): Xs a float array or list of arrays, Y2 (n, M)."""
        if _is_per_task(X):
            Y = check_array(Y, dtype=np.float64, ensure_2d=False, input_name="Y")
            self._single_task = Y.ndim == 1
            Y2 = Y[:, None] if self._single_task else Y
            Xs = _check_per_task_X(X, Y2.shape[1])
            for i, x in enumerate(Xs):
                if x.shape[0] != Y2.shape[0]:
                    raise ValueError(
                        f"X[{i}] has {x.shape[0]} samples but Y has {Y2.shape[0]} rows"
                    )
            self.n_features_in_ = Xs[0].shape[1]
            return Xs, Y2, True
        X, Y = validate_data(self, X, Y, multi_output=True, y_numeric=True, dtype=np.float64)
        self._single_task = Y.ndim == 1
        return X, (Y[:, None] if self._single_task else Y), False

    def _centre(self, Xs, Y2, psi, per_task):
        """Centre designs, psi and targets when fitting intercepts; return centring offsets."""
        n_tasks = Y2.shape[1]
        if not self.fit_intercept:
            return Xs, Y2, psi, None
        Y_mean = Y2.mean(axis=0)
        if per_task:
            X_means = np.column_stack([x.mean(axis=0) for x in Xs])  # (d, M)
            Xs = [x - x.mean(axis=0) for x in Xs]
        else:
            X_means = np.repeat(Xs.mean(axis=0)[:, None], n_tasks, axis=1)
            Xs = Xs - Xs.mean(axis=0)
        if psi is not None:
            # Rows of A_i = X_i + psi_i 1^T have mean x_bar_i + psi_bar_i 1.
            X_means = X_means + psi.mean(axis=0)
            psi = psi - psi.mean(axis=0)
        return Xs, Y2 - Y_mean, psi, (X_means, Y_mean)

    def _store_solution(self, result, offsets):
        W = result.coef
        if offsets is None:
            b = np.zeros(W.shape[1])
        else:
            X_means, Y_mean = offsets
            b = Y_mean - np.sum(X_means * W, axis=0)
        self.coef_ = W[:, 0] if self._single_task else W
        self.intercept_ = float(b[0]) if self._single_task else b
        self.n_iter_ = result.n_iter
        self.objective_ = result.objective
        self.objective_history_ = np.asarray(result.objective_history)

    def predict(self, X, psi=None):
        """Predict Y = X W + b (column i from X_i when X is a list of per-task designs).

        psi (n, M), optional, adds psi_i (1^T w_i) to task i as in the training objective;
        by default no offset is added, since Eq. 5 needs the readers' scores of the sample.
        """
        check_is_fitted(self)
        W = self.coef_[:, None] if self._single_task else self.coef_
        b = np.atleast_1d(self.intercept_)
        if _is_per_task(X):
            Xs = _check_per_task_X(X, W.shape[1], self.n_features_in_)
            n = Xs[0].shape[0]
            if any(x.shape[0] != n for x in Xs):
                raise ValueError("the per-task designs must have the same number of samples")
            P = np.column_stack([x @ W[:, i] for i, x in enumerate(Xs)])
        else:
            Xv = validate_data(self, X, reset=False, dtype=np.float64)
            n = Xv.shape[0]
            P = Xv @ W
        P = P + b
        Psi = _check_psi(psi, n, W.shape[1], self._single_task)
        if Psi is not None:
            P = P + Psi * W.sum(axis=0)
        return P[:, 0] if self._single_task else P

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags


class GraphSparseMTL(_BaseMTL):
    """Graph-regularized sparse multi-task least squares (paper Eq. 6; MALSAR Least_SRMTL).

    Minimizes over W in R^{d x M}

        sum_i 1/2 ||(X_i + psi_i 1^T) w_i + b_i - y_i||^2 + rho1 ||W S||_F^2 + rho2 ||W||_1

    (no 1/n factor: scikit-learn's Lasso alpha equals rho2 / n for one task and rho1 = 0).

    Parameters
    ----------
    rho1 : weight of the task-graph penalty ||W S||_F^2 = tr(W L W^T) (Eq. 3-4).
    rho2 : weight of the l1 penalty.
    graph : "auto" or an (M, E) structure matrix S. "auto" estimates S from the training
        data with `estimate_task_graph` (per-task Lasso, correlation > 0.85). With no edges
        (E = 0, or a single task) the tasks are independent Lasso problems; a disconnected
        graph couples tasks within each component only.
    psi : optional (n, M) per-sample, per-task values (Eq. 5, see
        `radiologist_inconsistency`), added to every feature of task i's design.
    fit_intercept : fit an unpenalized intercept b_i per task (by centring).
    tol, max_iter : stopping rule of `apg` (relative objective change and fixed-point
        residual both <= tol), run on working sets of features (`apg_working_set`).

    Attributes
    ----------
    coef_ : (d, M), or (d,) for a 1-D y.  intercept_ : (M,) or float.
    graph_ : the (M, E) structure matrix used.  n_iter_, objective_ (value of the
    objective above at the solution, on centred data when fitting intercepts),
    objective_history_ : objective after each iteration.
    """

    _parameter_constraints: dict = {
        **_BaseMTL._parameter_constraints,
        "rho1": [Interval(Real, 0, None, closed="left")],
        "rho2": [Interval(Real, 0, None, closed="left")],
        "graph": [StrOptions({"auto"}), "array-like"],
        "psi": ["array-like", None],
    }

    def __init__(
        self,
        rho1=1.0,
        rho2=10.0,
        graph="auto",
        psi=None,
        fit_intercept=False,
        tol=1e-6,
        max_iter=5000,
    ):
        self.rho1 = rho1
        self.rho2 = rho2
        self.graph = graph
        self.psi = psi
        self.fit_intercept = fit_intercept
        self.tol = tol
        self.max_iter = max_iter

    def fit(self, X, Y):
        """Fit on X ((n, d) array or list of M (n, d) arrays) and Y ((n, M) or (n,))."""
        self._validate_params()
        Xs, Y2, per_task = self._validate_training(X, Y)
        n_tasks = Y2.shape[1]
        psi = _check_psi(self.psi, Y2.shape[0], n_tasks, self._single_task)
        Xc, Yc, psi_c, offsets = self._centre(Xs, Y2, psi, per_task)
        if isinstance(self.graph, str):
            S = estimate_task_graph(Xc, Yc)
        else:
            S = validate_graph(self.graph, n_tasks)
        laplacian = graph_laplacian(S, n_tasks)
        smooth = _build_smooth(Xc, Yc, psi_c, per_task, laplacian, self.rho1)
        penalty = L1Penalty(self.rho2)
        result = apg_working_set(smooth, penalty, tol=self.tol, max_iter=self.max_iter)
        self.graph_ = S
        self._store_solution(result, offsets)
        return self


class TraceNormMTL(_BaseMTL):
    """Trace-norm regularized multi-task least squares (paper Eq. 2; MALSAR Least_Trace).

    Minimizes  sum_i 1/2 ||X_i w_i + b_i - y_i||^2 + rho ||W||_*  with ||W||_* the sum of
    the singular values of W (d x M); the proximal step is singular value thresholding.

    Parameters: rho (>= 0), fit_intercept, tol, max_iter as in `GraphSparseMTL`.
    Attributes: coef_, intercept_, n_iter_, objective_, objective_history_.
    """

    _parameter_constraints: dict = {
        **_BaseMTL._parameter_constraints,
        "rho": [Interval(Real, 0, None, closed="left")],
    }

    def __init__(self, rho=1.0, fit_intercept=False, tol=1e-6, max_iter=5000):
        self.rho = rho
        self.fit_intercept = fit_intercept
        self.tol = tol
        self.max_iter = max_iter

    def fit(self, X, Y):
        """Fit on X ((n, d) array or list of M (n, d) arrays) and Y ((n, M) or (n,))."""
        self._validate_params()
        Xs, Y2, per_task = self._validate_training(X, Y)
        Xc, Yc, _, offsets = self._centre(Xs, Y2, None, per_task)
        smooth = _build_smooth(Xc, Yc, None, per_task)
        result = apg(smooth, TraceNormPenalty(self.rho), tol=self.tol, max_iter=self.max_iter)
        self._store_solution(result, offsets)
        return self


def graph_sparse_mtl_path(
    X, Y, rho2_values, *, rho1=1.0, graph=None, psi=None, tol=1e-6, max_iter=5000
):
    """Solve Eq. 6 (no intercept) for each rho2 in `rho2_values`, in the order given, each
    solve warm-started from the previous solution (give the values in decreasing order).

    The smooth part is built once. graph is an
    (M, E) structure matrix or None (no coupling). Returns (coefs (K, d, M), n_iters (K,),
    objectives (K,)).
    """
    if _is_per_task(X):
        Y2 = check_array(Y, dtype=np.float64, input_name="Y")
        Xs = _check_per_task_X(X, Y2.shape[1])
    else:
        Xs, Y2 = check_array(X, dtype=np.float64), check_array(Y, dtype=np.float64)
    n_tasks = Y2.shape[1]
    S = np.zeros((n_tasks, 0)) if graph is None else validate_graph(graph, n_tasks)
    P = _check_psi(psi, Y2.shape[0], n_tasks, single=False)
    smooth = _build_smooth(Xs, Y2, P, _is_per_task(X), graph_laplacian(S, n_tasks), rho1)
    coefs, n_iters, objectives = [], [], []
    W = None
    for rho2 in rho2_values:
        if rho2 < 0:
            raise ValueError(f"rho2 values must be non-negative, got {rho2}")
        result = apg_working_set(smooth, L1Penalty(rho2), W, tol=tol, max_iter=max_iter)
        W = result.coef
        coefs.append(W)
        n_iters.append(result.n_iter)
        objectives.append(result.objective)
    return np.stack(coefs), np.array(n_iters), np.array(objectives)
