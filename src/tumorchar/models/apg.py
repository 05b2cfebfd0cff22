"""Accelerated proximal gradient for multi-task least squares (paper Eq. 2 and Eq. 6).

The problem is  min_W  f(W) + g(W)  over W in R^{d x M} with the smooth quadratic part

    f(W) = sum_i 1/2 ||A_i w_i - y_i||^2 + rho1 tr(W L W^T),    L = S S^T,

where A_i = X_i + psi_i 1^T is task i's design (X shared or per task, psi the per-sample
values of Eq. 5) and g is a proximable penalty: rho2 ||W||_1 (Eq. 6) or rho ||W||_* (Eq. 2).

Layout, in the spirit of skglm: a smooth part (`MultiTaskQuadratic`: value, gradient,
Lipschitz bound), proximal parts (`L1Penalty`, `TraceNormPenalty`) and one solver function
(`apg`). Because f is quadratic, the loop works on the *image* of W under a linear map
(A W in the sample space, or H W with the Gram matrices): the image of the extrapolated
point is the same combination of the images of the iterates, so each iteration costs one
application of the map and one of its adjoint (or a single Gram product).
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass, field

import numpy as np
from sklearn.exceptions import ConvergenceWarning

# Gram mode keeps M_gram d x d matrices; past this size the sample-space mode is used.
_GRAM_MAX_BYTES = 512 * 2**20


def graph_laplacian(S: np.ndarray | None, n_tasks: int) -> np.ndarray:
    """Return L = S S^T (Eq. 4) for an M x E structure matrix S; zeros when S has no edges."""
    if S is None or S.shape[1] == 0:
        return np.zeros((n_tasks, n_tasks))
    return S @ S.T


class MultiTaskQuadratic:
    """Smooth part f(W) = sum_i 1/2 ||(X_i + psi_i 1^T) w_i - y_i||^2 + rho1 tr(W L W^T).

    Parameters
    ----------
    X : (n, d) array shared by every task, or a list of M (n_i, d) arrays.
    Y : (n, M) array, or a list of M (n_i,) arrays when X is a list.
    laplacian : (M, M) positive semi-definite matrix L (Eq. 4), or None.
    rho1 : weight of the graph term.
    psi : optional (n, M) array (or list of (n_i,) arrays): per-sample, per-task offsets
        added to every feature of the design (Eq. 6, term 1).
    mode : "data" applies A and A^T (cost 2 n d M per iteration), "gram" applies the
        d x d Gram matrices (d^2 M); "auto" picks the cheaper one within a memory cap.
    """

    def __init__(self, X, Y, *, laplacian=None, rho1=0.0, psi=None, mode="auto"):
        self.shared = not isinstance(X, list | tuple)
        if self.shared:
            Y = np.asarray(Y, dtype=float)
            self.n_tasks = Y.shape[1]
            self.n_features = X.shape[1]
            self.X = X
            self.Y = Y
            self.psi = None if psi is None else np.asarray(psi, dtype=float)
        else:
            self.n_tasks = len(X)
            self.n_features = X[0].shape[1]
            self.X = list(X)
            self.Y = [np.asarray(y, dtype=float) for y in Y]
            self.psi = None if psi is None else [np.asarray(p, dtype=float) for p in psi]
        self.rho1 = float(rho1)
        self.L = (
            np.zeros((self.n_tasks, self.n_tasks)) if laplacian is None else np.asarray(laplacian)
        )
        self.has_graph = bool(self.rho1 > 0 and np.any(self.L))
        self.mode = self._choose_mode(mode)
        targets = [self.Y] if self.shared else self.Y
        self.const = 0.5 * sum(float(np.dot(y.ravel(), y.ravel())) for y in targets)  # 1/2||Y||^2
        self.linear = self.data_adjoint(self.Y)  # B = A^T Y, (d, M)
        if self.mode == "gram":
            self._build_gram()

    # ----- sample-space operators -------------------------------------------------------
    def _choose_mode(self, mode):
        if mode != "auto":
            if mode not in ("data", "gram"):
                raise ValueError(f"mode must be 'auto', 'data' or 'gram', got {mode!r}")
            return mode
        d = self.n_features
        n_gram = 1 if (self.shared and self.psi is None) else self.n_tasks
        if n_gram * d * d * 8 > _GRAM_MAX_BYTES:
            return "data"
        n = self.X.shape[0] if self.shared else min(x.shape[0] for x in self.X)
        # Per iteration: d^2 M flops with Gram matrices against 2 n d M in sample space.
        return "gram" if d < 2 * n else "data"

    def data_forward(self, W):
        """A W: the (n, M) predictions (a list of (n_i,) vectors for per-task designs)."""
        if self.shared:
            out = self.X @ W
            if self.psi is not None:
                out += self.psi * W.sum(axis=0)
            return out
        out = [x @ W[:, i] for i, x in enumerate(self.X)]
        if self.psi is not None:
            sums = W.sum(axis=0)
            out = [o + p * sums[i] for i, (o, p) in enumerate(zip(out, self.psi, strict=True))]
        return out

    def data_adjoint(self, R):
        """A^T R: the (d, M) matrix whose column i is A_i^T r_i."""
        if self.shared:
            out = self.X.T @ R
            if self.psi is not None:
                out += (self.psi * R).sum(axis=0)
            return out
        out = np.empty((self.n_features, self.n_tasks))
        for i, x in enumerate(self.X):
            out[:, i] = x.T @ R[i]
            if self.psi is not None:
                out[:, i] += float(self.psi[i] @ R[i])
        return out

    def _build_gram(self):
        """Precompute H_i = A_i^T A_i (one shared matrix when no psi and X is shared)."""
        if self.shared and self.psi is None:
            self.gram = [self.X.T @ self.X]
        elif self.shared:
            G = self.X.T @ self.X
            self.gram = []
            for i in range(self.n_tasks):
                v = self.X.T @ self.psi[:, i]
                Hi = G + v[:, None] + v[None, :] + float(self.psi[:, i] @ self.psi[:, i])
                self.gram.append(Hi)
        else:
            self.gram = []
            for i, x in enumerate(self.X):
                A = x if self.psi is None else x + self.psi[i][:, None]
                self.gram.append(A.T @ A)

    # ----- what the loop uses -----------------------------------------------------------
    def image(self, W):
        """The linear image the loop carries: A W (data mode) or H W (gram mode)."""
        if self.mode == "data":
            return self.data_forward(W)
        if len(self.gram) == 1:
            return self.gram[0] @ W
        return np.column_stack([H @ W[:, i] for i, H in enumerate(self.gram)])

    def combine(self, a, img_a, b, img_b):
        """Image of a*U + b*V from the images of U and V (f's map is linear)."""
        if isinstance(img_a, list):
            return [a * u + b * v for u, v in zip(img_a, img_b, strict=True)]
        return a * img_a + b * img_b

    def _graph_value(self, W):
        return self.rho1 * float(np.sum((W @ self.L) * W)) if self.has_graph else 0.0

    def value(self, W, img):
        """f(W) given img = image(W)."""
        if self.mode == "data":
            if isinstance(img, list):
                pairs = zip(img, self.Y, strict=True)
                loss = sum(0.5 * float(np.sum((p - y) ** 2)) for p, y in pairs)
            else:
                loss = 0.5 * float(np.sum((img - self.Y) ** 2))
        else:
            loss = 0.5 * float(np.sum(W * img)) - float(np.sum(W * self.linear)) + self.const
        return loss + self._graph_value(W)

    def gradient(self, W, img):
        """grad f(W) = A^T (A W - Y) + 2 rho1 W L, given img = image(W)."""
        if self.mode == "data":
            if isinstance(img, list):
                grad = self.data_adjoint([p - y for p, y in zip(img, self.Y, strict=True)])
            else:
                grad = self.data_adjoint(img - self.Y)
        else:
            grad = img - self.linear
        if self.has_graph:
            grad += 2.0 * self.rho1 * (W @ self.L)
        return grad

    def curvature(self, D, img_D):
        """<D, Hess f D> = ||A D||^2 + 2 rho1 tr(D L D^T), from img_D = image(D)."""
        if self.mode == "data":
            if isinstance(img_D, list):
                quad = sum(float(v @ v) for v in img_D)
            else:
                quad = float(np.sum(img_D * img_D))
        else:
            quad = float(np.sum(D * img_D))
        return quad + 2.0 * self._graph_value(D)

    def lipschitz(self, rng=None, n_iter=30):
        """Estimate of lambda_max(Hess f) by power iteration on W -> grad f(W) - grad f(0).

        Power iteration approaches the top eigenvalue from below; the loop's curvature test
        (backtracking) corrects the rare step where the estimate is too small.
        """
        rng = np.random.default_rng(0) if rng is None else rng
        V = rng.standard_normal((self.n_features, self.n_tasks))
        V /= np.linalg.norm(V)
        lam = 0.0
        for _ in range(n_iter):
            HV = self.hessian_apply(V)
            new = float(np.linalg.norm(HV))
            if new == 0.0:
                return 0.0
            V = HV / new
            converged = abs(new - lam) <= 1e-4 * new
            lam = new
            if converged:
                break
        return lam

    def restrict(self, rows: np.ndarray) -> MultiTaskQuadratic:
        """The same smooth part on the feature rows `rows` of W, the other rows fixed at 0.

        The graph term tr(W L W^T) = sum_j w_j L w_j^T separates over rows, so the
        restricted problem is the full one with the other features removed.
        """
        if self.mode == "gram":  # slice the Gram matrices instead of recomputing them
            sub = copy.copy(self)
            sub.gram = [H[np.ix_(rows, rows)] for H in self.gram]
            sub.linear = self.linear[rows]
            sub.n_features = len(rows)
            sub.X = None  # gram mode never touches the designs
            return sub
        X = self.X[:, rows] if self.shared else [x[:, rows] for x in self.X]
        return MultiTaskQuadratic(X, self.Y, laplacian=self.L, rho1=self.rho1, psi=self.psi)

    def hessian_apply(self, V):
        """Hess f V = A^T A V + 2 rho1 V L."""
        img = self.image(V)
        HV = self.data_adjoint(img) if self.mode == "data" else img
        if self.has_graph:
            HV = HV + 2.0 * self.rho1 * (V @ self.L)
        return HV


@dataclass
class L1Penalty:
    """g(W) = rho ||W||_1; prox is soft-thresholding at rho * step."""

    rho: float

    def value(self, W):
        return self.rho * float(np.abs(W).sum())

    def prox(self, V, step):
        t = self.rho * step
        return np.sign(V) * np.maximum(np.abs(V) - t, 0.0)


@dataclass
class TraceNormPenalty:
    """g(W) = rho ||W||_* (sum of singular values); prox is singular value thresholding."""

    rho: float

    def value(self, W):
        return self.rho * float(np.linalg.svd(W, compute_uv=False).sum())

    def prox(self, V, step):
        U, s, Vt = np.linalg.svd(V, full_matrices=False)
        s = np.maximum(s - self.rho * step, 0.0)
        keep = s > 0
        return (U[:, keep] * s[keep]) @ Vt[keep]


@dataclass
class APGResult:
    """Solution of `apg` with its convergence record."""

    coef: np.ndarray
    objective: float
    n_iter: int
    converged: bool
    objective_history: list = field(default_factory=list)
    kkt_residual: float = math.nan
    lipschitz: float = math.nan


def apg(
    smooth: MultiTaskQuadratic,
    penalty,
    W0: np.ndarray | None = None,
    *,
    tol: float = 1e-6,
    max_iter: int = 5000,
    restart: bool = True,
    lipschitz: float | None = None,
    warn: bool = True,
) -> APGResult:
    """Minimize f(W) + g(W) by FISTA (Beck & Teboulle 2009) with backtracking and restart.

    Iteration k, from the search point Z = W_k + beta_k (W_k - W_{k-1}):
        W+ = prox_{g/gamma}(Z - grad f(Z) / gamma),
    accepted when <D, Hess f D> <= gamma ||D||^2 for D = W+ - Z (the exact form of the
    usual sufficient-decrease test for a quadratic f), otherwise gamma doubles;
    t_{k+1} = (1 + sqrt(1 + 4 t_k^2)) / 2, beta = (t_k - 1) / t_{k+1}. With `restart`, the
    momentum is reset when <Z - W+, W+ - W_k> > 0 (gradient-based adaptive restart of
    O'Donoghue & Candes 2015), which restores linear convergence on well-conditioned
    problems.

    Stops when both the relative objective change |F_k - F_{k-1}| / |F_k| and the
    fixed-point residual gamma ||Z - W+|| / ||grad f(0)|| (the norm of the gradient
    mapping, zero exactly at a KKT point) are at most `tol`. `W0` gives a warm start.
    """
    d, m = smooth.n_features, smooth.n_tasks
    W = np.zeros((d, m)) if W0 is None else np.array(W0, dtype=float, copy=True)
    img = smooth.image(W)
    F = smooth.value(W, img) + penalty.value(W)
    history = [F]
    gamma = smooth.lipschitz() if lipschitz is None else float(lipschitz)
    gamma = max(gamma, np.finfo(float).tiny)
    scale = max(float(np.linalg.norm(smooth.linear)), np.finfo(float).tiny)
    W_prev, img_prev = W, img
    t = 1.0
    converged = False
    residual = math.inf
    k = 0
    while k < max_iter:
        k += 1
        t_next = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * t * t))
        beta = (t - 1.0) / t_next
        if beta > 0.0:
            Z = W + beta * (W - W_prev)
            img_Z = smooth.combine(1.0 + beta, img, -beta, img_prev)
        else:
            Z, img_Z = W, img
        grad_Z = smooth.gradient(Z, img_Z)
        while True:
            W_new = penalty.prox(Z - grad_Z / gamma, 1.0 / gamma)
            img_new = smooth.image(W_new)
            D = W_new - Z
            dd = float(np.sum(D * D))
            curv = smooth.curvature(D, smooth.combine(1.0, img_new, -1.0, img_Z))
            if curv <= gamma * dd * (1.0 + 1e-12) or dd == 0.0:
                break
            gamma = max(2.0 * gamma, curv / dd)
        F_new = smooth.value(W_new, img_new) + penalty.value(W_new)
        history.append(F_new)
        residual = gamma * math.sqrt(dd) / scale
        rel_change = abs(F_new - F) / max(abs(F_new), np.finfo(float).tiny)
        if restart and float(np.sum((Z - W_new) * (W_new - W))) > 0.0:
            t_next = 1.0
        W_prev, img_prev = W, img
        W, img, F, t = W_new, img_new, F_new, t_next
        if rel_change <= tol and residual <= tol:
            converged = True
            break
    if not converged and warn:
        warnings.warn(
            f"APG did not converge in {max_iter} iterations (relative objective change "
            f"{rel_change:.2e}, fixed-point residual {residual:.2e}, tol {tol:.0e}); "
            "increase max_iter or tol.",
            ConvergenceWarning,
            stacklevel=2,
        )
    return APGResult(W, F, k, converged, history, residual, gamma)


def apg_working_set(
    smooth: MultiTaskQuadratic,
    penalty: L1Penalty,
    W0: np.ndarray | None = None,
    *,
    tol: float = 1e-6,
    max_iter: int = 5000,
    min_size: int = 128,
    warn: bool = True,
) -> APGResult:
    """`apg` on a growing working set of features (rows of W), for the l1 penalty.

    The l1 and graph terms separate over rows, so rows outside the working set stay at 0
    as long as their gradient satisfies the optimality condition |grad f(W)_ji| <= rho2.
    Each round solves the problem restricted to the set (warm-started), then computes the
    full gradient once; rows that violate the condition join the set, ranked by
    max_i |grad_ji| / rho2, keeping the set at most twice the current support (celer,
    skglm); early rounds are solved to a loose tolerance (1e-2, then 10x tighter each
    round), the final set to `tol`. It stops when no row outside the set violates the
    condition and the restricted solve met `tol`: W is then a solution of the full problem
    to the same tolerance. Once the set would exceed half of the features, the round solves
    the whole problem.
    `max_iter` bounds the APG iterations over all rounds.
    """
    d, m = smooth.n_features, smooth.n_tasks
    W = np.zeros((d, m)) if W0 is None else np.array(W0, dtype=float, copy=True)
    history: list = []
    used = 0
    threshold = penalty.rho * (1.0 + 1e-8)
    in_set = np.zeros(d, dtype=bool)
    result = None
    rounds = 0
    inner_tol = tol
    while True:
        grad = smooth.gradient(W, smooth.image(W))
        support = np.any(W != 0.0, axis=1)
        score = np.abs(grad).max(axis=1)
        violators = (~in_set) & (score > threshold)
        if result is not None and result.converged and not violators.any():
            if inner_tol <= tol:
                converged = True
                break
            inner_tol = tol  # the set is right: finish it at the requested tolerance
        else:
            inner_tol = max(tol, 1e-2 * 0.1**rounds)  # early sets are solved roughly
        rounds += 1
        if used >= max_iter:
            converged = False
            break
        size = max(min_size, 2 * int(support.sum()), int(in_set.sum()) + 1)
        size = d if 2 * size > d else size  # a set this large: solve the whole problem
        score[support | in_set] = np.inf  # keep the rows already in play, add the worst
        rows = np.sort(np.argsort(-score, kind="stable")[:size])
        in_set[rows] = True
        result = apg(
            smooth.restrict(rows),
            penalty,
            W[rows],
            tol=inner_tol,
            max_iter=max_iter - used,
            warn=False,
        )
        used += result.n_iter
        history.extend(result.objective_history[1:] if history else result.objective_history)
        W = np.zeros((d, m))
        W[rows] = result.coef
        if size == d and inner_tol <= tol:  # the whole problem was solved
            converged = result.converged
            break
    if not converged and warn:
        warnings.warn(
            f"APG (working sets) did not converge in {max_iter} iterations; increase "
            "max_iter or tol.",
            ConvergenceWarning,
            stacklevel=2,
        )
    objective = smooth.value(W, smooth.image(W)) + penalty.value(W)
    return APGResult(W, objective, used, converged, history, result.kkt_residual)
