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
from tumorchar.models.taskgraph import edges_of, fit_task_graph, validate_graph

LOSS_SCALES = ("sum", "mean")


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
        "loss": [StrOptions(set(LOSS_SCALES))],
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

    def _loss_weight(self, n_samples: int) -> float:
        """Factor turning the scale-free rho of ``loss="mean"`` into the summed loss's."""
        return float(n_samples) if self.loss == "mean" else 1.0

    def _store_solution(self, result, offsets, loss_weight=1.0):
        W = result.coef
        if offsets is None:
            b = np.zeros(W.shape[1])
        else:
            X_means, Y_mean = offsets
            b = Y_mean - np.sum(X_means * W, axis=0)
        self.coef_ = W[:, 0] if self._single_task else W
        self.intercept_ = float(b[0]) if self._single_task else b
        self.n_iter_ = result.n_iter
        self.converged_ = bool(result.converged)
        self.objective_ = result.objective / loss_weight
        self.objective_history_ = np.asarray(result.objective_history) / loss_weight

    def _linear_predict(self, X):
        """(X W + b as an (n, M) array, W (d, M))."""
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
            P = Xv @ W
        return P + b, W

    def predict(self, X):
        """Predict Y = X W + b (column i from X_i when X is a list of per-task designs)."""
        P, _ = self._linear_predict(X)
        return P[:, 0] if self._single_task else P

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags


# The paper's priors (section V-C) on its own, unnormalised loss, and the training-set
# size they went with: 1144 nodules in 10 folds leave about 1030 per training fold.
PAPER_RHO1, PAPER_RHO2, PAPER_N_TRAIN = 1.0, 10.0, 1030


def paper_rhos_on_mean_scale(n_train: int = PAPER_N_TRAIN) -> tuple[float, float]:
    """The paper's (rho1, rho2) = (1, 10) translated onto ``loss="mean"``.

    Dividing Eq. 6 by n leaves its minimiser unchanged when rho1 and rho2 are divided by
    n too, so (1, 10) on the paper's summed loss with n training cases is (1/n, 10/n) on
    the mean loss; with n = 1030, (0.00097, 0.0097). The translation is exact only for the
    paper's feature scale, which it does not state; on standardised features (every column
    of unit variance, so (1/n) X^T X has mean eigenvalue 1) a graph weight of 0.001 adds a
    curvature of 4 rho1 = 0.004 per edge against about 1 from the loss: negligible. Hence
    the inner cross-validation of `GraphSparseMTLCV`, whose grid contains these values.
    """
    return PAPER_RHO1 / n_train, PAPER_RHO2 / n_train


class GraphSparseMTL(_BaseMTL):
    """Graph-regularized sparse multi-task least squares (paper Eq. 6; MALSAR Least_SRMTL).

    Minimizes over W in R^{d x M}

        c sum_i 1/2 ||(X_i + psi_i 1^T) w_i + b_i - y_i||^2 + rho1 ||W S||_F^2 + rho2 ||W||_1

    with c = 1 (``loss="sum"``, the paper's and MALSAR's scale; scikit-learn's Lasso alpha
    is rho2 / n for one task and rho1 = 0) or c = 1/n (``loss="mean"``: rho2 is then
    scikit-learn's alpha, and the rho stay meaningful when n changes; see
    `paper_rhos_on_mean_scale` for the paper's values on this scale).

    Parameters
    ----------
    rho1 : weight of the task-graph penalty ||W S||_F^2 = tr(W L W^T) (Eq. 3-4).
    rho2 : weight of the l1 penalty.
    graph : "auto" or an (M, E) structure matrix S. "auto" estimates S from the training
        data with `taskgraph.fit_task_graph` (per-task Lasso solved to a certified
        duality gap, correlation > 0.85). With no edges (E = 0, or a single task) the
        tasks are independent Lasso problems; a disconnected graph couples tasks within
        each component only.
    loss : "sum" or "mean" (above).
    fit_intercept : fit an unpenalized intercept b_i per task (by centring).
    tol, max_iter : stopping rule of `apg` (relative objective change and fixed-point
        residual both <= tol), run on working sets of features (`apg_working_set`).
    warm_start : start from the previous fit's ``coef_`` (a path of rho values on the same
        data, as `GraphSparseMTLCV` refits) instead of W = 0.

    Ψ (paper Eq. 5) is per-sample data, so it goes to ``fit(X, Y, psi=...)``, not to the
    constructor; it is added to every feature of task i's design, as Eq. 6 writes. Test
    cases have no reader scores, so ``predict(X)`` uses the training mean of Ψ
    (``psi_mean_``) for them: the fitted model then predicts on average what it predicted
    for the training cases, whereas Ψ = 0 (below Eq. 5's minimum of 1) would shift every
    prediction by -mean(Ψ) 1^T w_i. With an intercept, Ψ's training mean is absorbed into
    b and only its deviations from the mean enter the fit. ``predict(X, psi=...)`` uses
    given values instead (cases with known reader scores).

    Attributes
    ----------
    coef_ : (d, M), or (d,) for a 1-D y.  intercept_ : (M,) or float.
    graph_ : the (M, E) structure matrix used; graph_edges_ : its (a, b) task pairs;
    graph_correlation_ : (M, M) correlations the "auto" graph was thresholded from (None
    for a given graph); graph_duality_gap_ : the largest relative duality gap of its
    per-task Lassos (None for a given graph).
    psi_mean_ : (M,) training mean of Ψ, None when fitted without Ψ.
    n_iter_, converged_, objective_ (the objective above at the solution, on centred data
    when fitting intercepts), objective_history_ : objective after each iteration.
    """

    _parameter_constraints: dict = {
        **_BaseMTL._parameter_constraints,
        "rho1": [Interval(Real, 0, None, closed="left")],
        "rho2": [Interval(Real, 0, None, closed="left")],
        "graph": [StrOptions({"auto"}), "array-like"],
        "warm_start": ["boolean"],
    }

    def __init__(
        self,
        rho1=1.0,
        rho2=10.0,
        graph="auto",
        loss="sum",
        fit_intercept=False,
        tol=1e-6,
        max_iter=5000,
        warm_start=False,
    ):
        self.rho1 = rho1
        self.rho2 = rho2
        self.graph = graph
        self.loss = loss
        self.fit_intercept = fit_intercept
        self.tol = tol
        self.max_iter = max_iter
        self.warm_start = warm_start

    def fit(self, X, Y, psi=None):
        """Fit on X ((n, d) array or list of M (n, d) arrays), Y ((n, M) or (n,)) and the
        optional Eq. 5 values ``psi`` ((n, M), like Y)."""
        self._validate_params()
        Xs, Y2, per_task = self._validate_training(X, Y)
        n_samples, n_tasks = Y2.shape
        psi = _check_psi(psi, n_samples, n_tasks, self._single_task)
        self.psi_mean_ = None if psi is None else psi.mean(axis=0)
        Xc, Yc, psi_c, offsets = self._centre(Xs, Y2, psi, per_task)
        self.graph_correlation_ = self.graph_duality_gap_ = None
        if isinstance(self.graph, str):
            task_graph = fit_task_graph(Xc, Yc)
            S = task_graph.structure
            self.graph_correlation_ = task_graph.correlation
            self.graph_duality_gap_ = task_graph.duality_gap
        else:
            S = validate_graph(self.graph, n_tasks)
        self.graph_ = S
        self.graph_edges_ = edges_of(S)
        c = self._loss_weight(n_samples)
        smooth = _build_smooth(Xc, Yc, psi_c, per_task, graph_laplacian(S, n_tasks), c * self.rho1)
        penalty = L1Penalty(c * self.rho2)
        result = apg_working_set(
            smooth, penalty, self._initial_coef(Xc, n_tasks), tol=self.tol, max_iter=self.max_iter
        )
        self._store_solution(result, offsets, c)
        return self

    def _initial_coef(self, Xc, n_tasks):
        """The previous fit's W (d, M) under ``warm_start`` when its shape fits, else None."""
        coef = getattr(self, "coef_", None) if self.warm_start else None
        if coef is None:
            return None
        W = np.asarray(coef, dtype=float).reshape(-1, n_tasks)
        n_features = (Xc[0] if isinstance(Xc, list) else Xc).shape[1]
        return W if W.shape[0] == n_features else None

    def predict(self, X, psi=None):
        """Predict (X_i + psi_i 1^T) w_i + b_i for every task.

        psi (n, M): the samples' Eq. 5 values; by default the training mean ``psi_mean_``
        (class docstring). Giving psi to a model fitted without Ψ is an error.
        """
        P, W = self._linear_predict(X)
        if psi is not None and self.psi_mean_ is None:
            raise ValueError("this model was fitted without psi; predict it without psi")
        if self.psi_mean_ is not None:
            Psi = _check_psi(psi, P.shape[0], W.shape[1], self._single_task)
            offset = self.psi_mean_ if Psi is None else Psi
            P = P + offset * W.sum(axis=0)
        return P[:, 0] if self._single_task else P


class TraceNormMTL(_BaseMTL):
    """Trace-norm regularized multi-task least squares (paper Eq. 2; MALSAR Least_Trace).

    Minimizes  c sum_i 1/2 ||X_i w_i + b_i - y_i||^2 + rho ||W||_*  with ||W||_* the sum of
    the singular values of W (d x M) and c = 1 (``loss="sum"``) or 1/n (``"mean"``); the
    proximal step is singular value thresholding.

    Parameters: rho (>= 0), loss, fit_intercept, tol, max_iter as in `GraphSparseMTL`.
    Attributes: coef_, intercept_, n_iter_, converged_, objective_, objective_history_.
    """

    _parameter_constraints: dict = {
        **_BaseMTL._parameter_constraints,
        "rho": [Interval(Real, 0, None, closed="left")],
    }

    def __init__(self, rho=1.0, loss="sum", fit_intercept=False, tol=1e-6, max_iter=5000):
        self.rho = rho
        self.loss = loss
        self.fit_intercept = fit_intercept
        self.tol = tol
        self.max_iter = max_iter

    def fit(self, X, Y):
        """Fit on X ((n, d) array or list of M (n, d) arrays) and Y ((n, M) or (n,))."""
        self._validate_params()
        Xs, Y2, per_task = self._validate_training(X, Y)
        Xc, Yc, _, offsets = self._centre(Xs, Y2, None, per_task)
        smooth = _build_smooth(Xc, Yc, None, per_task)
        c = self._loss_weight(Y2.shape[0])
        result = apg(smooth, TraceNormPenalty(c * self.rho), tol=self.tol, max_iter=self.max_iter)
        self._store_solution(result, offsets, c)
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
