"""Weighted linear L2-loss SVM in the primal, solved by finite Newton steps.

The solver minimizes, over the weights ``w`` and an unregularized intercept ``b``,

    J(w, b) = ½‖w‖² + Σ_i c_i · max(0, 1 − y_i (w·x_i + b))²            (squared hinge)

with ``y_i ∈ {−1, +1}`` and per-instance costs ``c_i ≥ 0`` (Keerthi & DeCoste, JMLR 2005).
On the active set A = {i : y_i f_i < 1} the objective is quadratic, so one Newton step

    H = R + 2 Σ_{i∈A} c_i z_i z_iᵀ,   g = R θ − 2 Σ_{i∈A} c_i y_i (1 − y_i f_i) z_i

(``z = [x, 1]``, ``θ = [w, b]``, ``R = diag(1, …, 1, 0)``) lands on its minimum; the method
stops when the active set no longer changes. It is written for the proportion-SVM's inner
loop: it warm-starts from the previous ``θ`` and, when the costs are ``scale × s_i`` with
fixed ``s_i``, builds H from a Gram matrix precomputed once (``SquaredHingeProblem``), paying
only for the instances outside (or inside, whichever is fewer) the active set.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.linalg import cho_factor, cho_solve
from scipy.linalg.blas import dsyrk as syrk

_BIAS_RIDGE = 1e-10  # keeps H invertible when no instance is active


@dataclass
class SquaredHingeProblem:
    """Data of repeated L2-SVM fits: augmented features and their weighted Gram matrix.

    ``gram = Σ_i s_i z_i z_iᵀ`` with ``z_i = [x_i, 1]`` and the base weights ``s``.
    """

    Z: np.ndarray
    s: np.ndarray
    gram: np.ndarray = field(init=False)

    def __post_init__(self):
        self.gram = self.Z.T @ (self.s[:, None] * self.Z)

    @classmethod
    def from_features(cls, X: np.ndarray, sample_weight: np.ndarray | None = None):
        X = np.asarray(X, dtype=np.float64)
        Z = np.hstack([X, np.ones((X.shape[0], 1))])
        s = np.ones(X.shape[0]) if sample_weight is None else np.asarray(sample_weight, float)
        return cls(Z=Z, s=s)

    def hessian(self, active: np.ndarray, scale: float) -> np.ndarray:
        """H = R + 2·scale·Σ_{i∈A} s_i z_i z_iᵀ, from the smaller of A and its complement.

        Only the upper triangle is filled (a symmetric rank-k update), which is all the
        Cholesky factorization in ``fit_squared_hinge`` reads.
        """
        n_active = int(active.sum())
        use_active = n_active <= self.Z.shape[0] - n_active
        rows = active if use_active else ~active
        B = self.Z[rows] * np.sqrt(self.s[rows])[:, None]
        # B.T is Fortran-ordered: syrk computes (B.T)(B.T)ᵀ = BᵀB without a copy
        quad = syrk(1.0, B.T, trans=0, lower=0)
        if not use_active:
            quad = self.gram - quad
        H = 2.0 * scale * quad
        d = H.shape[0]
        H[np.arange(d - 1), np.arange(d - 1)] += 1.0
        H[d - 1, d - 1] += _BIAS_RIDGE
        return H


def squared_hinge_objective(theta: np.ndarray, problem: SquaredHingeProblem, y, scale) -> float:
    """J(w, b) = ½‖w‖² + scale · Σ_i s_i max(0, 1 − y_i f_i)²."""
    margins = np.maximum(0.0, 1.0 - y * (problem.Z @ theta))
    return 0.5 * float(theta[:-1] @ theta[:-1]) + scale * float(problem.s @ margins**2)


def fit_squared_hinge(
    problem: SquaredHingeProblem,
    y: np.ndarray,
    scale: float,
    theta0: np.ndarray | None = None,
    max_iter: int = 50,
    tol: float = 1e-8,
) -> np.ndarray:
    """Minimize J(w, b) (module docstring) with costs ``c_i = scale · s_i``; returns θ = [w, b].

    Finite Newton iterations with a backtracking (Armijo) line search, warm-started at
    ``theta0``. Converged when the active set is stable after a full step or the Newton
    decrement falls below ``tol`` (relative to J).
    """
    Z = problem.Z
    theta = np.zeros(Z.shape[1]) if theta0 is None else np.array(theta0, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    f = Z @ theta
    for _ in range(max_iter):
        margins = 1.0 - y * f
        active = margins > 0
        coef = np.where(active, 2.0 * scale * problem.s * y * margins, 0.0)
        grad = np.append(theta[:-1], 0.0) - coef @ Z
        grad[-1] += _BIAS_RIDGE * theta[-1]
        factor = cho_factor(problem.hessian(active, scale), lower=False, check_finite=False)
        step = -cho_solve(factor, grad, check_finite=False)
        decrement = -float(grad @ step)
        obj = 0.5 * float(theta[:-1] @ theta[:-1]) + scale * float(
            problem.s[active] @ margins[active] ** 2
        )
        if decrement <= tol * max(obj, 1e-12):
            break
        dz = Z @ step
        t = 1.0
        while True:
            theta_new = theta + t * step
            f_new = f + t * dz
            m_new = np.maximum(0.0, 1.0 - y * f_new)
            obj_new = 0.5 * float(theta_new[:-1] @ theta_new[:-1]) + scale * float(
                problem.s @ m_new**2
            )
            if obj_new <= obj - 0.25 * t * decrement or t < 1e-10:
                break
            t *= 0.5
        theta, f = theta_new, f_new
        if t == 1.0 and np.array_equal(1.0 - y * f > 0, active):
            break
    return theta
