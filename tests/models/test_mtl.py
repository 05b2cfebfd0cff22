"""GraphSparseMTL / TraceNormMTL against cvxpy, closed forms, scikit-learn and bad inputs."""

import cvxpy as cp
import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import Lasso
from sklearn.utils._param_validation import InvalidParameterError

from tumorchar.models import GraphSparseMTL, TraceNormMTL
from tumorchar.models.mtl import graph_sparse_mtl_path, radiologist_inconsistency

S_PATH = np.array([[1.0, 0.0, 0.0], [-1.0, 1.0, 0.0], [0.0, -1.0, 1.0], [0.0, 0.0, -1.0]])


def make_problem(n, d, m=4, per_task=False, seed=0):
    rng = np.random.default_rng(seed)
    W_true = rng.standard_normal((d, m)) * (rng.random((d, m)) < 0.3)
    if per_task:
        X = [rng.standard_normal((n, d)) for _ in range(m)]
        Y = np.column_stack([x @ W_true[:, i] for i, x in enumerate(X)])
    else:
        X = rng.standard_normal((n, d))
        Y = X @ W_true
    Y += 0.5 * rng.standard_normal((n, m)) + 2.0
    psi = rng.uniform(1.0, 2.0, (n, m))
    return X, Y, psi


def designs(X, m):
    return list(X) if isinstance(X, list) else [X] * m


def objective_eq6(W, b, X, Y, psi, S, rho1, rho2):
    """Eq. 6 written out independently of the solver."""
    m = Y.shape[1]
    P = np.zeros_like(Y) if psi is None else psi
    loss = sum(
        0.5 * np.sum(((x + P[:, [i]]) @ W[:, i] + b[i] - Y[:, i]) ** 2)
        for i, x in enumerate(designs(X, m))
    )
    return loss + rho1 * np.sum((W @ S) ** 2) + rho2 * np.abs(W).sum()


def cvxpy_eq6(X, Y, psi, S, rho1, rho2, intercept=False):
    d, m = designs(X, Y.shape[1])[0].shape[1], Y.shape[1]
    W, b = cp.Variable((d, m)), cp.Variable(m)
    P = np.zeros_like(Y) if psi is None else psi
    loss = 0
    for i, x in enumerate(designs(X, m)):
        pred = (x + P[:, [i]]) @ W[:, i] + (b[i] if intercept else 0)
        loss = loss + 0.5 * cp.sum_squares(pred - Y[:, i])
    cp.Problem(cp.Minimize(loss + rho1 * cp.sum_squares(W @ S) + rho2 * cp.norm1(W))).solve(
        solver="CLARABEL"
    )
    return W.value, (b.value if intercept else np.zeros(m))


@pytest.mark.parametrize("per_task", [False, True], ids=["shared-X", "per-task-X"])
@pytest.mark.parametrize("n,d", [(30, 60), (90, 20)], ids=["n<d", "n>d"])
@pytest.mark.parametrize("use_psi", [False, True], ids=["no-psi", "psi"])
def test_objective_matches_cvxpy(per_task, n, d, use_psi):
    X, Y, psi = make_problem(n, d, per_task=per_task)
    psi = psi if use_psi else None
    est = GraphSparseMTL(rho1=1.0, rho2=3.0, graph=S_PATH, tol=1e-10, max_iter=50000)
    est.fit(X, Y, psi=psi)
    W_ref, b_ref = cvxpy_eq6(X, Y, psi, S_PATH, 1.0, 3.0)
    ours = objective_eq6(est.coef_, est.intercept_, X, Y, psi, S_PATH, 1.0, 3.0)
    ref = objective_eq6(W_ref, b_ref, X, Y, psi, S_PATH, 1.0, 3.0)
    assert abs(ours - ref) <= 1e-6 * ref
    assert ours == pytest.approx(est.objective_, rel=1e-9)
    assert np.all(np.diff(est.objective_history_[-20:]) <= 1e-9 * ref)


@pytest.mark.parametrize("per_task", [False, True], ids=["shared-X", "per-task-X"])
def test_default_tolerance_reaches_optimum(per_task):
    X, Y, psi = make_problem(40, 80, per_task=per_task, seed=3)
    est = GraphSparseMTL(rho1=1.0, rho2=3.0, graph=S_PATH).fit(X, Y, psi=psi)
    tight = GraphSparseMTL(rho1=1.0, rho2=3.0, graph=S_PATH, tol=1e-12, max_iter=10**5)
    tight.fit(X, Y, psi=psi)
    assert est.objective_ - tight.objective_ <= 1e-6 * tight.objective_


def test_intercept_matches_cvxpy():
    X, Y, psi = make_problem(40, 25, per_task=False, seed=1)
    est = GraphSparseMTL(rho1=0.5, rho2=2.0, graph=S_PATH, fit_intercept=True, tol=1e-10)
    est.fit(X, Y, psi=psi)
    W_ref, b_ref = cvxpy_eq6(X, Y, psi, S_PATH, 0.5, 2.0, intercept=True)
    ours = objective_eq6(est.coef_, est.intercept_, X, Y, psi, S_PATH, 0.5, 2.0)
    ref = objective_eq6(W_ref, b_ref, X, Y, psi, S_PATH, 0.5, 2.0)
    assert abs(ours - ref) <= 1e-6 * ref
    np.testing.assert_allclose(est.intercept_, b_ref, atol=1e-4)


@pytest.mark.parametrize("per_task", [False, True], ids=["shared-X", "per-task-X"])
def test_rho2_zero_is_the_linear_solve(per_task):
    """Without l1 the optimum solves (blockdiag(A_i^T A_i) + 2 rho1 L (x) I) vec(W) = vec(A^T Y)."""
    X, Y, psi = make_problem(60, 12, per_task=per_task, seed=2)
    m, d, rho1 = Y.shape[1], 12, 2.0
    A = [x + psi[:, [i]] for i, x in enumerate(designs(X, m))]
    H = np.kron(S_PATH @ S_PATH.T, np.eye(d)) * 2 * rho1
    for i, a in enumerate(A):
        H[i * d : (i + 1) * d, i * d : (i + 1) * d] += a.T @ a
    rhs = np.concatenate([a.T @ Y[:, i] for i, a in enumerate(A)])
    W_exact = np.linalg.solve(H, rhs).reshape(m, d).T
    est = GraphSparseMTL(rho1=rho1, rho2=0.0, graph=S_PATH, tol=1e-12, max_iter=10**5)
    np.testing.assert_allclose(est.fit(X, Y, psi=psi).coef_, W_exact, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("fit_intercept", [False, True])
@pytest.mark.parametrize("n,d", [(30, 60), (80, 15)], ids=["n<d", "n>d"])
def test_one_task_without_graph_is_sklearn_lasso(fit_intercept, n, d):
    X, Y, _ = make_problem(n, d, m=1, seed=4)
    y, rho2 = Y[:, 0], 4.0
    ours = GraphSparseMTL(rho1=0.0, rho2=rho2, fit_intercept=fit_intercept, tol=1e-12)
    ours.fit(X, y)
    ref = Lasso(alpha=rho2 / n, fit_intercept=fit_intercept, tol=1e-14, max_iter=10**6).fit(X, y)
    assert ours.coef_.shape == (d,)
    np.testing.assert_allclose(ours.coef_, ref.coef_, atol=1e-6)
    assert ours.intercept_ == pytest.approx(ref.intercept_, abs=1e-6)
    np.testing.assert_allclose(ours.predict(X), ref.predict(X), atol=1e-5)


@pytest.mark.parametrize("per_task", [False, True], ids=["shared-X", "per-task-X"])
@pytest.mark.parametrize("n,d", [(30, 50), (80, 15)], ids=["n<d", "n>d"])
def test_trace_norm_matches_cvxpy(per_task, n, d):
    X, Y, _ = make_problem(n, d, per_task=per_task, seed=5)
    B = np.column_stack([x.T @ Y[:, i] for i, x in enumerate(designs(X, Y.shape[1]))])
    rho = 0.6 * np.linalg.norm(B, 2)  # W = 0 is optimal from ||A^T Y||_2 on
    est = TraceNormMTL(rho=rho, tol=1e-10, max_iter=50000).fit(X, Y)
    W = cp.Variable((d, Y.shape[1]))
    loss = sum(
        0.5 * cp.sum_squares(x @ W[:, i] - Y[:, i]) for i, x in enumerate(designs(X, Y.shape[1]))
    )
    cp.Problem(cp.Minimize(loss + rho * cp.normNuc(W))).solve(solver="CLARABEL")

    def objective(V):
        fit = sum(0.5 * np.sum((x @ V[:, i] - Y[:, i]) ** 2) for i, x in enumerate(designs(X, 4)))
        return fit + rho * np.linalg.svd(V, compute_uv=False).sum()

    assert abs(objective(est.coef_) - objective(W.value)) <= 1e-6 * objective(W.value)
    assert np.linalg.matrix_rank(est.coef_, tol=1e-8) < Y.shape[1]  # the penalty bites


def test_large_rho2_gives_zero_and_sparsity_grows():
    X, Y, _ = make_problem(40, 30, seed=6)
    rho_max = np.abs(X.T @ Y).max()
    zero = GraphSparseMTL(rho1=1.0, rho2=1.001 * rho_max, graph=S_PATH).fit(X, Y)
    assert np.all(zero.coef_ == 0)
    nnz = [
        np.count_nonzero(GraphSparseMTL(rho2=r, graph=S_PATH).fit(X, Y).coef_)
        for r in (0.5 * rho_max, 0.05 * rho_max)
    ]
    assert 0 < nnz[0] < nnz[1]


def test_path_warm_starts_match_cold_solves():
    X, Y, _ = make_problem(30, 40, seed=7)
    rhos = np.geomspace(20.0, 0.5, 5)
    coefs, n_iters, objectives = graph_sparse_mtl_path(X, Y, rhos, rho1=1.0, graph=S_PATH)
    assert coefs.shape == (5, 40, 4) and n_iters.shape == (5,)
    for rho2, obj in zip(rhos, objectives, strict=True):
        cold = GraphSparseMTL(rho1=1.0, rho2=rho2, graph=S_PATH, tol=1e-6).fit(X, Y)
        assert obj == pytest.approx(cold.objective_, rel=1e-5)


def test_per_task_predict_and_psi_offset():
    X, Y, psi = make_problem(30, 10, per_task=True, seed=8)
    est = GraphSparseMTL(rho2=1.0, graph=S_PATH, fit_intercept=True).fit(X, Y, psi=psi)
    P = est.predict(X, psi=psi)
    linear = np.column_stack([x @ est.coef_[:, i] for i, x in enumerate(X)]) + est.intercept_
    np.testing.assert_allclose(P, linear + psi * est.coef_.sum(axis=0))
    # without reader scores: the training mean of psi, never psi = 0
    np.testing.assert_allclose(est.psi_mean_, psi.mean(axis=0))
    np.testing.assert_allclose(est.predict(X), linear + psi.mean(axis=0) * est.coef_.sum(axis=0))
    assert est.predict(X[0]).shape == (30, 4)  # one shared design for every task


def test_convergence_warning_when_max_iter_is_too_small():
    X, Y, _ = make_problem(30, 60, seed=9)
    with pytest.warns(ConvergenceWarning):
        est = GraphSparseMTL(rho2=0.1, graph=S_PATH, max_iter=3).fit(X, Y)
    assert est.n_iter_ == 3


def test_auto_graph_is_estimated_inside_fit():
    rng = np.random.default_rng(10)
    X = rng.standard_normal((80, 30))
    w = rng.standard_normal(30)
    Y = np.column_stack([X @ w, X @ (w + 0.05 * rng.standard_normal(30)), X[:, ::-1] @ w])
    est = GraphSparseMTL(rho1=1.0, rho2=1.0).fit(X, Y)
    np.testing.assert_array_equal(est.graph_, [[1.0], [-1.0], [0.0]])


# ---- bad inputs (item 8) --------------------------------------------------------------


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_inputs_are_rejected(bad):
    X, Y, _ = make_problem(20, 5, seed=11)
    Xb, Yb = X.copy(), Y.copy()
    Xb[3, 2], Yb[4, 1] = bad, bad
    with pytest.raises(ValueError, match="X"):
        GraphSparseMTL(graph=S_PATH).fit(Xb, Y)
    with pytest.raises(ValueError, match="y|Y"):
        GraphSparseMTL(graph=S_PATH).fit(X, Yb)
    with pytest.raises(ValueError, match=r"X\[2\]"):
        GraphSparseMTL(graph=S_PATH).fit([X, X, Xb, X], Y)
    with pytest.raises(ValueError, match="psi"):
        GraphSparseMTL(graph=S_PATH).fit(X, Y, psi=np.where(np.isfinite(Yb), 1.0, bad))


def test_mismatched_shapes_are_rejected():
    X, Y, _ = make_problem(20, 5, seed=12)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        GraphSparseMTL(graph=S_PATH).fit(X, Y[:-1])
    with pytest.raises(ValueError, match="list of 3 designs but there are 4 tasks"):
        GraphSparseMTL(graph=S_PATH).fit([X, X, X], Y)
    with pytest.raises(ValueError, match="different numbers of features"):
        GraphSparseMTL(graph=S_PATH).fit([X, X, X, X[:, :4]], Y)
    with pytest.raises(ValueError, match=r"X\[1\] has 19 samples"):
        GraphSparseMTL(graph=S_PATH).fit([X, X[:-1], X, X], Y)
    with pytest.raises(ValueError, match="psi must have shape"):
        GraphSparseMTL(graph=S_PATH).fit(X, Y, psi=np.ones((20, 3)))
    with pytest.raises(ValueError, match="one row per task"):
        GraphSparseMTL(graph=S_PATH[:3]).fit(X, Y)
    est = GraphSparseMTL(graph=S_PATH).fit(X, Y)
    with pytest.raises(ValueError, match="features"):
        est.predict(X[:, :4])


@pytest.mark.parametrize("params", [{"rho1": -1.0}, {"rho2": -0.1}, {"tol": -1.0}, {"max_iter": 0}])
def test_negative_parameters_are_rejected(params):
    X, Y, _ = make_problem(20, 5, seed=13)
    with pytest.raises(InvalidParameterError):
        GraphSparseMTL(graph=S_PATH, **params).fit(X, Y)
    with pytest.raises(InvalidParameterError):
        TraceNormMTL(rho=-1.0).fit(X, Y)
    with pytest.raises(ValueError, match="non-negative"):
        graph_sparse_mtl_path(X, Y, [1.0, -1.0], graph=S_PATH)


def test_empty_graph_means_independent_lasso_problems():
    X, Y, _ = make_problem(30, 20, seed=14)
    coupled_off = GraphSparseMTL(rho1=100.0, rho2=2.0, graph=np.zeros((4, 0)), tol=1e-10)
    W = coupled_off.fit(X, Y).coef_
    for i in range(4):
        single = GraphSparseMTL(rho1=0.0, rho2=2.0, tol=1e-10).fit(X, Y[:, i])
        np.testing.assert_allclose(W[:, i], single.coef_, atol=1e-7)


def test_disconnected_graph_couples_within_components_only():
    X, Y, _ = make_problem(30, 20, seed=15)
    S = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])  # {0,1} and {2,3}
    W = GraphSparseMTL(rho1=2.0, rho2=2.0, graph=S, tol=1e-10).fit(X, Y).coef_
    pair = np.array([[1.0], [-1.0]])
    for cols in ([0, 1], [2, 3]):
        part = GraphSparseMTL(rho1=2.0, rho2=2.0, graph=pair, tol=1e-10).fit(X, Y[:, cols])
        np.testing.assert_allclose(W[:, cols], part.coef_, atol=1e-7)


def test_constant_target_task_gets_no_edge_and_is_still_fitted():
    rng = np.random.default_rng(16)
    X = rng.standard_normal((50, 10))
    w = rng.standard_normal(10)
    Y = np.column_stack([X @ w, X @ w + 0.01 * rng.standard_normal(50), np.full(50, 3.0)])
    est = GraphSparseMTL(rho1=1.0, rho2=0.5, fit_intercept=True)
    with pytest.warns(UserWarning, match="task.*2.*constant"):
        est.fit(X, Y)
    assert est.graph_.shape == (3, 1) and np.all(est.graph_[2] == 0)
    np.testing.assert_allclose(est.coef_[:, 2], 0.0, atol=1e-12)  # nothing to explain
    np.testing.assert_allclose(est.predict(X)[:, 2], 3.0)


def test_radiologist_inconsistency_eq5():
    ratings = np.array([[3, 3, 3, 3], [1, 3, np.nan, np.nan], [2, 4, 4, 2]], dtype=float)
    # row 2: mu = 3, sum of squares 4, sigma = 1 -> exp(4 / 2)
    np.testing.assert_allclose(radiologist_inconsistency(ratings), [1.0, np.e, np.exp(2.0)])
    with pytest.raises(ValueError, match="without any rating"):
        radiologist_inconsistency([[np.nan, np.nan]])


# ---- issue 14: the proposed model's parts do something, on a scale where rho means it ----


def pair_problem(seed=0, n=300, d=30):
    """Standardised features, tasks 0 and 1 with nearly equal slopes, task 0 noisier."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    w = rng.standard_normal(d) * (rng.random(d) < 0.5)
    Y = np.column_stack([X @ w, X @ (w + 0.1 * rng.standard_normal(d))])
    Y += rng.standard_normal((n, 2)) * [3.0, 0.5]
    return X, Y


def test_rho1_on_the_mean_scale_changes_the_solution_on_a_graph_edge():
    X, Y = pair_problem()
    edge = np.array([[1.0], [-1.0]])
    common = dict(rho2=0.01, graph=edge, loss="mean", fit_intercept=True, tol=1e-10)
    free = GraphSparseMTL(rho1=0.0, **common).fit(X, Y)
    coupled = GraphSparseMTL(rho1=0.5, **common).fit(X, Y)
    change = np.linalg.norm(coupled.coef_ - free.coef_) / np.linalg.norm(free.coef_)
    assert change > 0.05
    gap = np.linalg.norm(coupled.coef_[:, 0] - coupled.coef_[:, 1])
    assert gap < 0.5 * np.linalg.norm(free.coef_[:, 0] - free.coef_[:, 1])


def test_mean_loss_is_the_sum_loss_with_rho_times_n():
    X, Y = pair_problem(seed=1)
    n = X.shape[0]
    mean = GraphSparseMTL(rho1=0.2, rho2=0.05, graph=S_PATH[:2, :1], loss="mean", tol=1e-10)
    summed = GraphSparseMTL(rho1=0.2 * n, rho2=0.05 * n, graph=S_PATH[:2, :1], tol=1e-10)
    np.testing.assert_allclose(mean.fit(X, Y).coef_, summed.fit(X, Y).coef_, atol=1e-6)
    assert mean.objective_ == pytest.approx(summed.objective_ / n, rel=1e-9)


def test_training_mean_psi_makes_the_mean_error_unbiased_when_psi_is_uninformative():
    rng = np.random.default_rng(2)
    n, d = 2000, 10
    w = rng.uniform(0.2, 0.6, d)  # 1^T w clearly non-zero: psi enters every prediction
    X = rng.standard_normal((2 * n, d))
    y = X @ w + 3.0 + 0.3 * rng.standard_normal(2 * n)
    psi = np.exp(rng.uniform(0.0, 2.0, (2 * n, 1)))  # Eq. 5 values, unrelated to y
    est = GraphSparseMTL(rho1=0.0, rho2=0.001, loss="mean", fit_intercept=True)
    est.fit(X[:n], y[:n, None], psi=psi[:n])
    error = est.predict(X[n:])[:, 0] - y[n:]
    standard_error = error.std() / np.sqrt(n)
    assert abs(error.mean()) < 3 * standard_error
    as_zero = est.predict(X[n:], psi=np.zeros((n, 1)))[:, 0] - y[n:]
    assert abs(as_zero.mean()) > 10 * standard_error  # what Psi = 0 did


def test_a_dead_unit_cannot_produce_an_out_of_range_prediction():
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from tumorchar.models.preprocessing import NearConstantFilter

    rng = np.random.default_rng(3)
    n, d = 400, 12
    X = np.maximum(rng.standard_normal((n, d)), 0.0)  # ReLU-like units
    X[:, 5] = 0.0
    X[7, 5] = 1e-3  # a unit that fired once in training
    y = np.clip(3.0 + X[:, :4] @ np.array([0.8, -0.6, 0.5, 0.4]), 1.0, 5.0)
    y = y + 0.1 * rng.standard_normal(n)
    x_test = np.maximum(rng.standard_normal((1, d)), 0.0)
    x_test[0, 5] = 2.0  # it fires on the test case
    model = GraphSparseMTL(rho1=0.0, rho2=0.001, loss="mean", fit_intercept=True)
    raw = make_pipeline(StandardScaler(), model).fit(X, y)
    assert not 1.0 <= raw.predict(x_test)[0] <= 5.0  # the failure the filter prevents
    cleaned = make_pipeline(NearConstantFilter(), StandardScaler(), model).fit(X, y)
    assert not cleaned[0].get_support()[5]
    assert 1.0 <= cleaned.predict(x_test)[0] <= 5.0


def test_psi_is_a_fit_keyword_routed_through_a_pipeline():
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, Y, psi = make_problem(60, 8, seed=17)
    pipe = make_pipeline(StandardScaler(), GraphSparseMTL(rho2=1.0, fit_intercept=True))
    pipe.fit(X, Y, graphsparsemtl__psi=psi)
    np.testing.assert_allclose(pipe[-1].psi_mean_, psi.mean(axis=0))
    assert "psi" not in GraphSparseMTL().get_params()


def test_graph_sparse_mtl_cv_groups_inner_folds_by_patient_and_can_choose_rho1():
    from tumorchar.models.mtl_cv import GraphSparseMTLCV

    X, Y = pair_problem(seed=4, n=240)
    groups = np.repeat(np.arange(60), 4)  # 4 cases per patient
    est = GraphSparseMTLCV(rho1_grid=(0.0, 0.5), n_rho2=4, cv=3).fit(X, Y, groups=groups)
    assert est.cv_mse_rho2_.shape == (4,) and est.cv_mse_rho1_.shape == (2,)
    assert est.rho1_ == (0.0, 0.5)[int(np.argmin(est.cv_mse_rho1_))]
    assert est.rho1_ in (0.0, 0.5) and est.rho2_ in est.rho2_grid_
    assert est.estimator_.rho1 == est.rho1_
    np.testing.assert_allclose(est.predict(X), est.estimator_.predict(X))
    # every inner split keeps each patient on one side
    for train, test in est._splits(len(groups), groups):
        assert not set(groups[train]) & set(groups[test])
    with pytest.raises(ValueError, match="groups"):
        GraphSparseMTLCV(cv=3).fit(X, Y, groups=np.repeat([0, 1], 120))


def test_warm_start_continues_from_the_previous_fit_to_the_same_optimum():
    X, Y, psi = make_problem(60, 80, seed=3)
    warm = GraphSparseMTL(rho1=0.5, rho2=40.0, graph=S_PATH, tol=1e-8, warm_start=True)
    warm.fit(X, Y, psi=psi)
    first_iters = warm.n_iter_
    warm.fit(X, Y, psi=psi)  # from its own solution: nothing left to do
    assert warm.n_iter_ < first_iters / 10
    warm.set_params(rho2=2.0).fit(X, Y, psi=psi)
    cold = GraphSparseMTL(rho1=0.5, rho2=2.0, graph=S_PATH, tol=1e-8).fit(X, Y, psi=psi)
    assert warm.objective_ == pytest.approx(cold.objective_, rel=1e-6)
    # a start of another width (other features) is ignored, not misused
    warm.fit(X[:, :50], Y, psi=psi)
    assert warm.coef_.shape == (50, 4)


def test_graph_sparse_mtl_cv_refit_is_the_cold_solution_and_no_graph_keeps_rho1_zero():
    from tumorchar.models.mtl_cv import GraphSparseMTLCV

    X, Y, psi = make_problem(150, 40, seed=5)  # independent tasks: no edge in the graph
    groups = np.repeat(np.arange(50), 3)
    est = GraphSparseMTLCV(rho1_grid=(0.0, 0.01, 1.0), n_rho2=4, cv=3, tol=1e-8)
    est.fit(X, Y, psi=psi, groups=groups)
    assert est.graph_edges_ == [] and est.estimator_.graph == "auto"
    assert est.graph_correlation_ is not None  # the auto graph's diagnostics are kept
    # every rho1 then solves one problem; rounding must not choose a graph weight
    assert est.rho1_ == 0.0
    cold = GraphSparseMTL(rho1=est.rho1_, rho2=est.rho2_, loss="mean", fit_intercept=True,
                          tol=1e-8).fit(X, Y, psi=psi)  # fmt: skip
    assert est.converged_
    np.testing.assert_allclose(est.coef_, cold.coef_, atol=1e-5)


def test_rho1_zero_twin_of_a_model_without_graph_term_predicts_what_it_predicts():
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from tumorchar.experiments.e1_mtl import rho1_zero_refit
    from tumorchar.models.mtl_cv import GraphSparseMTLCV

    X, Y, psi = make_problem(150, 40, seed=5)  # no graph edge: rho1_ = 0
    model = make_pipeline(
        StandardScaler(), GraphSparseMTLCV(n_rho2=4, cv=3, tol=1e-8, random_state=0)
    )
    model.fit(X[:120], Y[:120], graphsparsemtlcv__psi=psi[:120])
    assert model[-1].rho1_ == 0.0
    twin = rho1_zero_refit(model, X[:120], Y[:120], X[120:], psi[:120])
    np.testing.assert_allclose(twin, model.predict(X[120:])[:, 0], atol=1e-6)
