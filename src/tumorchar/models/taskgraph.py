"""Task graph for graph-regularized multi-task learning (paper Eq. 3-4, section V-C).

The structure matrix S (M x E) has one column per edge (a, b): +1 in row a, -1 in row b,
so that ||W S||_F^2 = sum over edges ||w_a - w_b||^2 = tr(W L W^T) with L = S S^T.
As in the paper and MALSAR's SRMTL example, the edges come from per-task Lasso
coefficients: centre and L2-normalise each task's coefficient vector, take their
correlation matrix, and join the pairs whose correlation exceeds a threshold.

The rule, fixed so that it does not depend on the solver's tolerance:

1. features and targets are centred (the graph reflects slopes, not offsets);
2. each task's target is divided by its own rho_max = ||X_i^T y_i||_inf, so every task is
   a Lasso at the same relative strength rho = `GRAPH_LASSO_RATIO` (1 %) of the value that
   zeroes it (the rescaling changes a task's coefficients by a constant factor only, which
   the normalisation in step 3 removes);
3. each Lasso is solved to a relative duality gap <= `GRAPH_GAP_TOL` (1e-6), certified by
   `lasso_duality_gap`, not stopped at an iteration cap; if the cap is reached first a
   ConvergenceWarning states the gap reached;
4. edge (a, b) when corr(w_a, w_b) > `GRAPH_THRESHOLD` (0.85, MALSAR's example).

At a duality gap of 1e-6 the coefficients are within about sqrt(2e-6) ||y|| of the optimum
(strong convexity along the support), so correlations move by far less than a realistic
distance to the threshold; `TaskGraph.margin` tells how close the nearest pair is.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from tumorchar.models.apg import L1Penalty, MultiTaskQuadratic, apg_working_set

GRAPH_LASSO_RATIO = 0.01
GRAPH_THRESHOLD = 0.85
GRAPH_GAP_TOL = 1e-6
GRAPH_MAX_ITER = 20000


def incidence_from_adjacency(adjacency) -> np.ndarray:
    """Structure matrix S (M x E) of the undirected graph with a boolean M x M adjacency.

    Edges are the pairs a < b with adjacency[a, b] true, in row-major order; the column of
    edge (a, b) is +1 at a and -1 at b (Eq. 3).
    """
    A = np.asarray(adjacency, dtype=bool)
    if A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise ValueError(f"adjacency must be a square matrix, got shape {A.shape}")
    a_idx, b_idx = np.nonzero(np.triu(A | A.T, k=1))
    S = np.zeros((A.shape[0], a_idx.size))
    S[a_idx, np.arange(a_idx.size)] = 1.0
    S[b_idx, np.arange(a_idx.size)] = -1.0
    return S


def edges_of(S: np.ndarray) -> list[tuple[int, int]]:
    """The (a, b) task pairs of the columns of an incidence matrix (+1 at a, -1 at b)."""
    S = np.asarray(S)
    edges = []
    for column in S.T:
        a = np.flatnonzero(column > 0)
        b = np.flatnonzero(column < 0)
        if a.size == 1 and b.size == 1:
            edges.append(tuple(sorted((int(a[0]), int(b[0])))))
    return edges


def validate_graph(S, n_tasks: int) -> np.ndarray:
    """Check a user-given structure matrix: a finite real (M, E) array, E >= 0.

    Any real S is accepted (weighted edges included), since the penalty ||W S||_F^2 is
    convex for every S. An empty graph (E = 0) removes the coupling, so every task is an
    independent Lasso; a disconnected graph couples tasks only within its components.
    """
    S = np.asarray(S, dtype=float)
    if S.ndim == 1 and n_tasks == 1:
        S = S.reshape(1, -1)
    if S.ndim != 2 or S.shape[0] != n_tasks:
        raise ValueError(
            f"graph must be an incidence matrix with one row per task: expected shape "
            f"({n_tasks}, n_edges), got {S.shape}"
        )
    if not np.all(np.isfinite(S)):
        raise ValueError("graph contains NaN or infinite values")
    return S


def task_coefficient_correlation(W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Correlation matrix of the columns of W (d x M) after centring and L2-normalising.

    Returns (C, informative): columns that are constant (e.g. all-zero Lasso coefficients)
    have no defined correlation; they get 0 off the diagonal and informative[i] False.
    """
    Wc = W - W.mean(axis=0)
    norms = np.linalg.norm(Wc, axis=0)
    informative = norms > 0
    Wn = np.zeros_like(Wc)
    Wn[:, informative] = Wc[:, informative] / norms[informative]
    return Wn.T @ Wn, informative


def _columns(smooth: MultiTaskQuadratic, values) -> list[np.ndarray]:
    if smooth.shared:
        return [values[:, i] for i in range(smooth.n_tasks)]
    return list(values)


def lasso_duality_gap(smooth: MultiTaskQuadratic, W: np.ndarray, rho: float) -> np.ndarray:
    """Relative duality gap of each task's Lasso 1/2||X w - y||^2 + rho||w||_1 at W (d, M).

    With the residual r = y - X w, the dual point theta = r min(1, rho / ||X^T r||_inf) is
    feasible (||X^T theta||_inf <= rho) and D(theta) = 1/2||y||^2 - 1/2||y - theta||^2 is a
    lower bound of the optimum, so P(w) - D(theta) >= P(w) - P* >= 0 certifies how far w
    is from optimal. Returned relative to 1/2||y||^2 (the objective at w = 0).
    """
    targets = _columns(smooth, smooth.Y)
    fitted = _columns(smooth, smooth.data_forward(W))
    residuals = [y - f for y, f in zip(targets, fitted, strict=True)]
    correlations = np.abs(
        smooth.data_adjoint(np.column_stack(residuals) if smooth.shared else residuals)
    )
    gaps = np.empty(smooth.n_tasks)
    for i, (y, r) in enumerate(zip(targets, residuals, strict=True)):
        top = float(correlations[:, i].max()) if correlations.size else 0.0
        theta = r * (min(1.0, rho / top) if top > 0 else 1.0)
        primal = 0.5 * float(r @ r) + rho * float(np.abs(W[:, i]).sum())
        dual = 0.5 * float(y @ y) - 0.5 * float((y - theta) @ (y - theta))
        gaps[i] = max(primal - dual, 0.0) / max(0.5 * float(y @ y), np.finfo(float).tiny)
    return gaps


def per_task_lasso(
    X, Y, rho, *, gap_tol=GRAPH_GAP_TOL, max_iter=GRAPH_MAX_ITER
) -> tuple[np.ndarray, float]:
    """Solve the M Lasso problems sum_i 1/2||X_i w_i - y_i||^2 + rho||W||_1 to a relative
    duality gap <= ``gap_tol``.

    X is an (n, d) array shared by the tasks or a list of M arrays; Y is (n, M). The APG
    solve is tightened (warm-started, from tolerance 1e-3 down by 10 each time) until the
    certificate of `lasso_duality_gap` is met; if ``max_iter`` iterations run out first, a
    ConvergenceWarning gives the gap reached. Returns (W (d, M), largest relative gap).
    """
    Y = np.asarray(Y, dtype=float)
    targets = Y if not isinstance(X, list | tuple) else [Y[:, i] for i in range(Y.shape[1])]
    smooth = MultiTaskQuadratic(X, targets)
    penalty = L1Penalty(rho)
    W, used, tol = None, 0, 1e-3
    while True:
        result = apg_working_set(smooth, penalty, W, tol=tol, max_iter=max_iter - used, warn=False)
        W, used = result.coef, used + result.n_iter
        gap = float(np.max(lasso_duality_gap(smooth, W, rho)))
        if gap <= gap_tol or used >= max_iter or tol < 1e-14:
            break
        tol *= 0.1
    if gap > gap_tol:
        warnings.warn(
            f"task-graph Lasso stopped after {used} iterations at a relative duality gap "
            f"of {gap:.2e} (> {gap_tol:.0e}); the graph may change with a tighter solve",
            ConvergenceWarning,
            stacklevel=2,
        )
    return W, gap


@dataclass(frozen=True)
class TaskGraph:
    """An estimated task graph and what it was decided on.

    structure: S (M, E); correlation: (M, M) correlations of the per-task Lasso
    coefficients; informative: tasks whose coefficients are not constant; threshold;
    duality_gap: largest relative gap of the per-task Lassos.
    """

    structure: np.ndarray
    correlation: np.ndarray
    informative: np.ndarray
    threshold: float
    duality_gap: float

    @property
    def edges(self) -> list[tuple[int, int]]:
        return edges_of(self.structure)

    def edge_correlations(self) -> list[tuple[int, int, float]]:
        """(a, b, corr) of every edge."""
        return [(a, b, float(self.correlation[a, b])) for a, b in self.edges]

    @property
    def margin(self) -> float:
        """Smallest |corr - threshold| over the task pairs (how close the rule was to
        flipping an edge); inf for fewer than two tasks."""
        m = self.correlation.shape[0]
        upper = self.correlation[np.triu_indices(m, k=1)]
        return float(np.min(np.abs(upper - self.threshold))) if upper.size else float("inf")


def fit_task_graph(
    X,
    Y,
    *,
    ratio=GRAPH_LASSO_RATIO,
    threshold=GRAPH_THRESHOLD,
    gap_tol=GRAPH_GAP_TOL,
    max_iter=GRAPH_MAX_ITER,
) -> TaskGraph:
    """Estimate the task graph from per-task Lasso fits (module docstring, steps 1-4).

    X : (n, d) array shared by the M tasks, or a list of M (n, d) arrays; Y : (n, M).
    A task whose coefficients are all equal (a constant target, for one) has no defined
    correlation and gets no edge; a warning names it.
    """
    Y = np.asarray(Y, dtype=float)
    if Y.ndim != 2:
        raise ValueError(f"Y must be (n_samples, n_tasks), got shape {Y.shape}")
    n_tasks = Y.shape[1]
    if n_tasks < 2:
        return TaskGraph(
            np.zeros((n_tasks, 0)), np.eye(n_tasks), np.ones(n_tasks, bool), threshold, 0.0
        )
    Yc = Y - Y.mean(axis=0)
    if isinstance(X, list | tuple):
        Xc = [np.asarray(x, dtype=float) - np.mean(x, axis=0) for x in X]
        rho_max = np.array([np.abs(x.T @ Yc[:, i]).max() for i, x in enumerate(Xc)])
    else:
        Xc = np.asarray(X, dtype=float)
        Xc = Xc - Xc.mean(axis=0)
        rho_max = np.abs(Xc.T @ Yc).max(axis=0)
    # a task with rho_max = 0 (constant target) stays all-zero whatever its scale
    Yn = Yc / np.where(rho_max > 0, rho_max, 1.0)
    W, gap = per_task_lasso(Xc, Yn, ratio, gap_tol=gap_tol, max_iter=max_iter)
    C, informative = task_coefficient_correlation(W)
    if not informative.all():
        tasks = ", ".join(str(i) for i in np.flatnonzero(~informative))
        warnings.warn(
            f"task(s) {tasks}: per-task Lasso coefficients are constant (constant target or "
            "rho too large); no graph edge is attached to them",
            UserWarning,
            stacklevel=2,
        )
    S = incidence_from_adjacency(C > threshold)
    return TaskGraph(S, C, informative, float(threshold), gap)


def estimate_task_graph(X, Y, *, threshold=GRAPH_THRESHOLD, **options) -> np.ndarray:
    """The structure matrix S (M x E) of `fit_task_graph` (same arguments)."""
    return fit_task_graph(X, Y, threshold=threshold, **options).structure
