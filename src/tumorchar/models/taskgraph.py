"""Task graph for graph-regularized multi-task learning (paper Eq. 3-4, section V-C).

The structure matrix S (M x E) has one column per edge (a, b): +1 in row a, -1 in row b,
so that ||W S||_F^2 = sum over edges ||w_a - w_b||^2 = tr(W L W^T) with L = S S^T.
As in the paper and MALSAR's SRMTL example, the edges come from per-task Lasso
coefficients: centre and L2-normalise each task's coefficient vector, take their
correlation matrix, and join the pairs whose correlation exceeds a threshold.
"""

from __future__ import annotations

import warnings

import numpy as np

from tumorchar.models.apg import L1Penalty, MultiTaskQuadratic, apg_working_set


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


def per_task_lasso(X, Y, rho, *, tol=1e-4, max_iter=500) -> np.ndarray:
    """Coefficients of the M independent Lasso problems sum_i 1/2||X_i w_i - y_i||^2 + rho||W||_1.

    X is an (n, d) array shared by the tasks or a list of M arrays; Y is (n, M).
    """
    Y = np.asarray(Y, dtype=float)
    targets = Y if not isinstance(X, list | tuple) else [Y[:, i] for i in range(Y.shape[1])]
    smooth = MultiTaskQuadratic(X, targets)
    return apg_working_set(smooth, L1Penalty(rho), tol=tol, max_iter=max_iter, warn=False).coef


def estimate_task_graph(X, Y, *, rho=None, threshold=0.85) -> np.ndarray:
    """Estimate the structure matrix S (M x E) from per-task Lasso fits (paper section V-C).

    X : (n, d) array shared by the M tasks, or a list of M (n, d) arrays; Y : (n, M).
    Features and targets are centred first, so the graph reflects how the tasks' slopes
    relate and not their offsets. rho : Lasso weight in the unscaled objective
    1/2||X w - y||^2 + rho||w||_1; by default 1% of the smallest rho that zeroes every
    task, so the fits keep many features whatever the data scale. Tasks i < j are joined
    when the correlation of their centred, normalised coefficient vectors exceeds
    `threshold`. A task whose coefficients are all equal (a constant target, for one) has
    no defined correlation and gets no edge; a warning names it.
    """
    Y = np.asarray(Y, dtype=float)
    if Y.ndim != 2:
        raise ValueError(f"Y must be (n_samples, n_tasks), got shape {Y.shape}")
    n_tasks = Y.shape[1]
    if n_tasks < 2:
        return np.zeros((n_tasks, 0))
    Yc = Y - Y.mean(axis=0)
    if isinstance(X, list | tuple):
        Xc = [np.asarray(x, dtype=float) - np.mean(x, axis=0) for x in X]
        rho_max = max(float(np.abs(x.T @ Yc[:, i]).max()) for i, x in enumerate(Xc))
    else:
        Xc = np.asarray(X, dtype=float)
        Xc = Xc - Xc.mean(axis=0)
        rho_max = float(np.abs(Xc.T @ Yc).max())
    if rho is None:
        rho = 0.01 * rho_max
    W = per_task_lasso(Xc, Yc, rho)
    C, informative = task_coefficient_correlation(W)
    if not informative.all():
        tasks = ", ".join(str(i) for i in np.flatnonzero(~informative))
        warnings.warn(
            f"task(s) {tasks}: per-task Lasso coefficients are constant (constant target or "
            "rho too large); no graph edge is attached to them",
            UserWarning,
            stacklevel=2,
        )
    return incidence_from_adjacency(C > threshold)
