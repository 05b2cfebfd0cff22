"""Graph-regularized sparse MTL (paper Eq. 6) with rho1 and rho2 chosen by inner
cross-validation, grouped by patient.

The paper fixes rho1 = 1, rho2 = 10 on its own unnormalised loss and an unstated feature
scale. On the mean loss (``loss="mean"``, `mtl.paper_rhos_on_mean_scale`) those values
are 0.00097 and 0.0097 for standardised features, where the graph term is negligible.
`GraphSparseMTLCV` therefore picks (rho1, rho2) on the training data: for every inner
split (`GroupKFold` by patient when ``groups`` are given) it estimates the task graph on
the inner training part, solves a warm-started path of rho2 values for each rho1 of the
grid, and scores the held-out part by its mean squared error. The search is in two
stages (a full grid costs five times more, mostly in the ill-conditioned designs that Ψ
added to every feature makes): rho2 along its path at rho1 = 0, then rho1 over its grid
at that rho2; the chosen pair is refitted on all the training data. rho1 = 0 is on the
grid, so the graph term is kept only where it lowers the inner-CV error, and
``cv_mse_rho1_`` shows by how much.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GroupKFold, KFold
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted, check_random_state

from tumorchar.models.apg import L1Penalty, apg_working_set, graph_laplacian
from tumorchar.models.mtl import (
    GraphSparseMTL,
    _BaseMTL,
    _build_smooth,
    _check_psi,
    paper_rhos_on_mean_scale,
)
from tumorchar.models.taskgraph import fit_task_graph

DEFAULT_RHO1_GRID = (0.0, paper_rhos_on_mean_scale()[0], 0.01, 0.1, 1.0)


@dataclass(frozen=True)
class _SplitState:
    """What stage 2 reuses from stage 1 on one inner split: the Laplacian of its task graph
    and the solutions {rho2: W} (warm starts)."""

    laplacian: np.ndarray
    solutions: dict


def _smallest_best(values, errors, rtol=1e-6) -> float:
    """The smallest value whose error is the minimum within ``rtol``: rho1 > 0 is chosen
    only where the graph term lowers the error. On a split without graph edges every rho1
    gets the rho1 = 0 error exactly (`_split_errors`); ``rtol`` absorbs what the solver's
    tolerance leaves between warm-started solves (≈ 1e-8 relative in held-out error)."""
    values, errors = np.asarray(values, dtype=float), np.asarray(errors, dtype=float)
    tied = errors <= errors.min() + rtol * abs(errors.min())
    return float(values[tied].min())


def _rows(X, index):
    return [x[index] for x in X] if isinstance(X, list) else X[index]


class GraphSparseMTLCV(_BaseMTL):
    """`GraphSparseMTL` on the mean loss with (rho1, rho2) chosen by inner CV.

    Parameters
    ----------
    rho1_grid : rho1 values tried (0 and the paper's translated value included).
    rho2_grid : rho2 values tried, or None: ``n_rho2`` values from rho2_max (all W = 0)
        down to ``rho2_min_ratio`` rho2_max, log-spaced.
    cv : number of inner splits (`GroupKFold` with ``groups``, else shuffled `KFold`).
    score_tasks : task columns scored on the held-out part (None: all), each task's MSE
        divided by its variance so tasks weigh alike.
    fit_intercept, tol, max_iter : as in `GraphSparseMTL`.
    random_state : shuffling of the inner `KFold` when no groups are given.

    ``fit(X, Y, psi=None, groups=None)``: Ψ as in `GraphSparseMTL` (the held-out part is
    predicted with the inner training mean of Ψ, as test cases are); ``groups`` are the
    patients, so no patient is on both sides of an inner split.

    Attributes: ``rho1_``, ``rho2_`` (chosen), ``rho1_grid_``, ``rho2_grid_``,
    ``cv_mse_rho2_`` (mean held-out error along rho2_grid_ at rho1 = 0),
    ``cv_mse_rho1_`` (along rho1_grid_ at the chosen rho2), ``estimator_`` (the refitted
    `GraphSparseMTL`) and its ``coef_``, ``intercept_``, ``graph_``, ``graph_edges_``,
    ``graph_correlation_``, ``graph_duality_gap_``, ``psi_mean_``.
    """

    _parameter_constraints: dict = {
        **{k: v for k, v in _BaseMTL._parameter_constraints.items() if k != "loss"},
        "rho1_grid": ["array-like"],
        "rho2_grid": ["array-like", None],
        "n_rho2": [Interval(Integral, 1, None, closed="left")],
        "rho2_min_ratio": [Interval(Real, 0, 1, closed="neither")],
        "cv": [Interval(Integral, 2, None, closed="left")],
        "score_tasks": ["array-like", None],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        rho1_grid=DEFAULT_RHO1_GRID,
        rho2_grid=None,
        n_rho2=6,
        rho2_min_ratio=1e-3,
        cv=3,
        score_tasks=None,
        fit_intercept=True,
        tol=1e-4,
        max_iter=5000,
        random_state=None,
    ):
        self.rho1_grid = rho1_grid
        self.rho2_grid = rho2_grid
        self.n_rho2 = n_rho2
        self.rho2_min_ratio = rho2_min_ratio
        self.cv = cv
        self.score_tasks = score_tasks
        self.fit_intercept = fit_intercept
        self.tol = tol
        self.max_iter = max_iter
        self.random_state = random_state

    loss = "mean"  # the scale the grids are on; not a parameter

    def _splits(self, n, groups):
        if groups is not None:
            groups = np.asarray(groups)
            if groups.shape != (n,):
                raise ValueError(f"groups must have shape ({n},), got {groups.shape}")
            if np.unique(groups).size < self.cv:
                raise ValueError(f"{np.unique(groups).size} groups for {self.cv} inner splits")
            return list(GroupKFold(self.cv).split(np.zeros(n), groups=groups))
        rng = check_random_state(self.random_state)
        return list(KFold(self.cv, shuffle=True, random_state=rng).split(np.zeros(n)))

    def _rho2_grid(self, Xs, Y2, psi, per_task):
        if self.rho2_grid is not None:
            grid = np.sort(np.asarray(self.rho2_grid, dtype=float))[::-1]
            if grid.size == 0 or np.any(grid < 0):
                raise ValueError("rho2_grid must hold non-negative values")
            return grid
        Xc, Yc, psi_c, _ = self._centre(Xs, Y2, psi, per_task)
        top = float(np.abs(_build_smooth(Xc, Yc, psi_c, per_task).linear).max()) / Y2.shape[0]
        top = top if top > 0 else 1.0
        return np.geomspace(top, top * self.rho2_min_ratio, int(self.n_rho2))

    def _split_errors(self, Xs, Y2, psi, per_task, split, pairs, tasks, state=None):
        """Held-out error of one inner split for each (rho1, rho2) of ``pairs``, and the
        split's `_SplitState` (its task graph and the solutions of the last rho1 solved).

        Every solve is warm-started: the rho2 of one rho1 in decreasing order, each from the
        previous one; a rho2 solved before (in ``state``: stage 1 on this split, or the
        previous rho1) from that solution. A cold start at a small rho2 needs more than
        ``max_iter`` iterations on these designs, where the warm path converges.
        """
        train, test = split
        Xtr, Ytr = _rows(Xs, train), Y2[train]
        ptr = None if psi is None else psi[train]
        Xc, Yc, psi_c, offsets = self._centre(Xtr, Ytr, ptr, per_task)
        if state is None:
            structure = fit_task_graph(Xc, Yc).structure
            state = _SplitState(graph_laplacian(structure, Y2.shape[1]), {})
        laplacian, solutions = state.laplacian, dict(state.solutions)
        n = len(train)
        Xte = _rows(Xs, test)
        variance = np.maximum(Ytr[:, tasks].var(axis=0), np.finfo(float).tiny)
        # without a graph edge on this split the graph term is zero: every rho1 is the
        # rho1 = 0 problem, solved once and scored once (exact ties: `_smallest_best`)
        coupled = bool(laplacian.any())
        errors, solved = {}, {}
        for rho1 in sorted({r1 for r1, _ in pairs}):
            effective = rho1 if coupled else 0.0
            W = None
            for rho2 in sorted({r2 for r1, r2 in pairs if r1 == rho1}, reverse=True):
                if (effective, rho2) not in solved:
                    smooth = _build_smooth(Xc, Yc, psi_c, per_task, laplacian, n * effective)
                    W = solutions.get(rho2, W)
                    result = apg_working_set(
                        smooth,
                        L1Penalty(n * rho2),
                        W,
                        tol=self.tol,
                        max_iter=self.max_iter,
                        warn=False,
                    )
                    W = solutions[rho2] = result.coef
                    psi_mean = None if ptr is None else ptr.mean(0)
                    P = self._predict_with(W, offsets, Xte, psi_mean)
                    mse = ((P[:, tasks] - Y2[test][:, tasks]) ** 2).mean(axis=0)
                    solved[(effective, rho2)] = float(np.mean(mse / variance))
                errors[(rho1, rho2)] = solved[(effective, rho2)]
        return errors, _SplitState(laplacian, solutions)

    def _mean_errors(self, Xs, Y2, psi, per_task, splits, pairs, tasks, states=None):
        """Mean held-out error of each pair over the splits, and each split's state."""
        states = states or [None] * len(splits)
        runs = [
            self._split_errors(Xs, Y2, psi, per_task, s, pairs, tasks, state)
            for s, state in zip(splits, states, strict=True)
        ]
        errors = np.array([np.mean([e[p] for e, _ in runs]) for p in pairs])
        return errors, [state for _, state in runs]

    def _refit(self, X, Y, psi, rho2s):
        """`GraphSparseMTL` at the chosen (rho1_, rho2_) on all of (X, Y), reached by a warm
        path: rho2 down its grid at rho1 = 0, then rho1 up its grid at rho2_. The task graph
        is estimated once, by the first solve, and reused along the path."""
        estimator = GraphSparseMTL(
            rho1=0.0,
            loss="mean",
            fit_intercept=self.fit_intercept,
            tol=self.tol,
            max_iter=self.max_iter,
            warm_start=True,
        )
        path = [(0.0, r2) for r2 in rho2s if r2 > self.rho2_]
        path += [(r1, self.rho2_) for r1 in np.sort(self.rho1_grid_) if r1 <= self.rho1_]
        first = None
        for rho1, rho2 in path[:-1]:
            with warnings.catch_warnings():  # only the last solve is the model
                warnings.simplefilter("ignore", ConvergenceWarning)
                estimator.set_params(rho1=rho1, rho2=rho2).fit(X, Y, psi=psi)
            if first is None:
                first = (
                    estimator.graph_,
                    estimator.graph_correlation_,
                    estimator.graph_duality_gap_,
                )
                estimator.set_params(graph=estimator.graph_)
        estimator.set_params(rho1=self.rho1_, rho2=self.rho2_).fit(X, Y, psi=psi)
        if first is not None:  # the same data gives the same "auto" graph: say so
            estimator.graph_, estimator.graph_correlation_, estimator.graph_duality_gap_ = first
            estimator.set_params(graph="auto")
        return estimator

    def _predict_with(self, W, offsets, X, psi_mean):
        b = np.zeros(W.shape[1]) if offsets is None else offsets[1] - np.sum(offsets[0] * W, 0)
        if isinstance(X, list):
            P = np.column_stack([x @ W[:, i] for i, x in enumerate(X)])
        else:
            P = X @ W
        P = P + b
        return P if psi_mean is None else P + psi_mean * W.sum(axis=0)

    def fit(self, X, Y, psi=None, groups=None):
        """Choose (rho1, rho2) by inner CV, then refit on all of (X, Y) (class docstring)."""
        self._validate_params()
        Xs, Y2, per_task = self._validate_training(X, Y)
        n, n_tasks = Y2.shape
        P = _check_psi(psi, n, n_tasks, self._single_task)
        tasks = np.arange(n_tasks) if self.score_tasks is None else np.asarray(self.score_tasks)
        rho1s = np.asarray(self.rho1_grid, dtype=float)
        if rho1s.ndim != 1 or rho1s.size == 0 or np.any(rho1s < 0):
            raise ValueError("rho1_grid must be a non-empty list of non-negative values")
        rho2s = self._rho2_grid(Xs, Y2, P, per_task)
        splits = self._splits(n, groups)
        # stage 1: rho2 at rho1 = 0 (independent Lassos); stage 2: rho1 at that rho2,
        # warm-started from stage 1's solutions on each split
        self.cv_mse_rho2_, states = self._mean_errors(
            Xs, Y2, P, per_task, splits, [(0.0, r) for r in rho2s], tasks
        )
        rho2 = float(rho2s[int(np.argmin(self.cv_mse_rho2_))])
        states = [_SplitState(s.laplacian, {rho2: s.solutions[rho2]}) for s in states]
        self.cv_mse_rho1_, _ = self._mean_errors(
            Xs, Y2, P, per_task, splits, [(r, rho2) for r in rho1s], tasks, states
        )
        self.rho1_grid_, self.rho2_grid_ = rho1s, rho2s
        self.rho1_, self.rho2_ = _smallest_best(rho1s, self.cv_mse_rho1_), rho2
        self.estimator_ = self._refit(X, Y, psi, rho2s)
        for name in (
            "coef_",
            "intercept_",
            "graph_",
            "graph_edges_",
            "graph_correlation_",
            "graph_duality_gap_",
            "psi_mean_",
            "n_iter_",
            "converged_",
            "objective_",
        ):
            setattr(self, name, getattr(self.estimator_, name))
        return self

    def predict(self, X, psi=None):
        """`GraphSparseMTL.predict` of the refitted model (Ψ: training mean by default)."""
        check_is_fitted(self, "estimator_")
        # from this object's own copies of the fitted arrays (what a bundle stores and checks)
        return GraphSparseMTL.predict(self, X, psi=psi)
