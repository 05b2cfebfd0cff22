"""The APG solver: working sets against the full solve, Lipschitz estimate, warm starts."""

import numpy as np
import pytest

from tumorchar.models.apg import (
    L1Penalty,
    MultiTaskQuadratic,
    TraceNormPenalty,
    apg,
    apg_working_set,
    graph_laplacian,
)

S = np.array([[1.0, 0.0], [-1.0, 1.0], [0.0, -1.0]])


def quadratic(per_task, n=40, d=150, seed=0, mode="auto"):
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((d, 3)) * (rng.random((d, 1)) < 0.1)
    psi = rng.uniform(0.0, 0.5, (n, 3))
    if per_task:
        X = [rng.standard_normal((n, d)) for _ in range(3)]
        Y = [x @ W[:, i] + rng.standard_normal(n) for i, x in enumerate(X)]
        return MultiTaskQuadratic(
            X, Y, laplacian=graph_laplacian(S, 3), rho1=1.0, psi=list(psi.T), mode=mode
        )
    X = rng.standard_normal((n, d))
    Y = X @ W + rng.standard_normal((n, 3))
    return MultiTaskQuadratic(X, Y, laplacian=graph_laplacian(S, 3), rho1=1.0, psi=psi, mode=mode)


@pytest.mark.parametrize("per_task", [False, True])
@pytest.mark.parametrize("rho", [2.0, 15.0])
@pytest.mark.parametrize("n", [40, 100], ids=["data-mode", "gram-mode"])
def test_working_sets_reach_the_full_solution(per_task, rho, n):
    smooth = quadratic(per_task, n=n)
    assert smooth.mode == ("gram" if n == 100 else "data")
    full = apg(smooth, L1Penalty(rho), tol=1e-11, max_iter=50000)
    ws = apg_working_set(smooth, L1Penalty(rho), tol=1e-11, max_iter=50000, min_size=4)
    assert ws.converged
    assert abs(ws.objective - full.objective) <= 1e-9 * full.objective
    # rows outside the support satisfy the optimality condition |grad| <= rho
    grad = smooth.gradient(ws.coef, smooth.image(ws.coef))
    zero_rows = ~np.any(ws.coef != 0, axis=1)
    assert np.abs(grad[zero_rows]).max() <= rho * (1 + 1e-6)


@pytest.mark.parametrize("per_task", [False, True])
def test_data_and_gram_modes_agree(per_task):
    data = apg(quadratic(per_task, n=60, d=20, mode="data"), L1Penalty(3.0), tol=1e-12)
    gram = apg(quadratic(per_task, n=60, d=20, mode="gram"), L1Penalty(3.0), tol=1e-12)
    assert gram.objective == pytest.approx(data.objective, rel=1e-10)
    np.testing.assert_allclose(gram.coef, data.coef, atol=1e-7)


def test_lipschitz_estimate_is_the_top_hessian_eigenvalue():
    smooth = quadratic(False, n=30, d=8)
    d, m = 8, 3
    H = np.zeros((d * m, d * m))
    for k in range(d * m):
        E = np.zeros(d * m)
        E[k] = 1.0
        H[:, k] = smooth.hessian_apply(E.reshape(m, d).T).T.ravel()
    top = np.linalg.eigvalsh(H).max()
    assert smooth.lipschitz(n_iter=500) == pytest.approx(top, rel=1e-3)


def test_warm_start_from_the_solution_stops_at_once():
    smooth = quadratic(False, d=60)
    cold = apg(smooth, L1Penalty(5.0), tol=1e-10, max_iter=20000)
    warm = apg(smooth, L1Penalty(5.0), cold.coef, tol=1e-8)
    assert warm.n_iter <= 3
    assert warm.objective == pytest.approx(cold.objective, rel=1e-10)


def test_singular_value_thresholding():
    rng = np.random.default_rng(1)
    V = rng.standard_normal((10, 4))
    out = TraceNormPenalty(1.0).prox(V, 0.5)
    s_in = np.linalg.svd(V, compute_uv=False)
    np.testing.assert_allclose(np.linalg.svd(out, compute_uv=False), np.maximum(s_in - 0.5, 0))
    soft = L1Penalty(2.0).prox(np.array([-3.0, 0.5, 1.5]), 0.5)
    np.testing.assert_array_equal(soft, [-2.0, 0.0, 0.5])
