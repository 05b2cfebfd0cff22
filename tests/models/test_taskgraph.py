"""Task graph estimation (per-task Lasso -> correlation -> threshold -> incidence matrix)."""

import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from tumorchar.models.apg import MultiTaskQuadratic
from tumorchar.models.taskgraph import (
    GRAPH_GAP_TOL,
    GRAPH_THRESHOLD,
    estimate_task_graph,
    fit_task_graph,
    incidence_from_adjacency,
    lasso_duality_gap,
    per_task_lasso,
    task_coefficient_correlation,
    validate_graph,
)


def test_incidence_matrix_of_a_triangle_and_its_laplacian():
    S = incidence_from_adjacency(np.array([[0, 1, 1], [1, 0, 0], [1, 0, 0]], dtype=bool))
    np.testing.assert_array_equal(S, [[1, 1], [-1, 0], [0, -1]])
    W = np.arange(6.0).reshape(2, 3)
    # ||W S||_F^2 = sum over edges ||w_a - w_b||^2 (Eq. 3) = tr(W S S^T W^T) (Eq. 4)
    by_edges = np.sum((W[:, 0] - W[:, 1]) ** 2) + np.sum((W[:, 0] - W[:, 2]) ** 2)
    assert np.sum((W @ S) ** 2) == pytest.approx(by_edges)
    assert np.trace(W @ S @ S.T @ W.T) == pytest.approx(by_edges)


def test_correlation_of_centred_normalised_coefficients():
    rng = np.random.default_rng(0)
    w = rng.standard_normal(20)
    W = np.column_stack([w, 3 * w + 1, -w, np.zeros(20)])
    C, informative = task_coefficient_correlation(W)
    np.testing.assert_allclose(C[:3, :3], [[1, 1, -1], [1, 1, -1], [-1, -1, 1]], atol=1e-12)
    np.testing.assert_array_equal(informative, [True, True, True, False])
    assert np.all(C[3] == 0)


@pytest.mark.parametrize("per_task", [False, True])
def test_related_tasks_are_joined_unrelated_ones_are_not(per_task):
    rng = np.random.default_rng(1)
    n, d = 120, 25
    X = [rng.standard_normal((n, d)) for _ in range(4)] if per_task else rng.standard_normal((n, d))
    Xs = X if per_task else [X] * 4
    w_a, w_b = rng.standard_normal(d), rng.standard_normal(d)
    ws = [w_a, w_a + 0.05 * rng.standard_normal(d), w_b, w_b + 0.05 * rng.standard_normal(d)]
    Y = np.column_stack([x @ w for x, w in zip(Xs, ws, strict=True)])
    Y += 0.1 * rng.standard_normal(Y.shape) + 3.0
    S = estimate_task_graph(X, Y)
    np.testing.assert_array_equal(S, [[1, 0], [-1, 0], [0, 1], [0, -1]])
    assert estimate_task_graph(X, Y, threshold=-1.0).shape == (4, 6)  # complete graph


def test_single_task_has_no_edges_and_validation_errors():
    rng = np.random.default_rng(2)
    assert estimate_task_graph(rng.standard_normal((10, 3)), np.ones((10, 1))).shape == (1, 0)
    with pytest.raises(ValueError, match="one row per task"):
        validate_graph(np.ones((3, 2)), 4)
    with pytest.raises(ValueError, match="NaN or infinite"):
        validate_graph(np.array([[1.0], [np.nan]]), 2)
    with pytest.raises(ValueError, match="square"):
        incidence_from_adjacency(np.ones((2, 3)))
    assert validate_graph(np.zeros((3, 0)), 3).shape == (3, 0)


def correlated_pair_problem(seed=0, n=200, d=40):
    """Tasks 0 and 1 share most of their coefficients (correlation about 0.95); tasks 2 and
    3 have their own. The features are correlated, as network units are."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n, d))
    X = base + 0.8 * base[:, [0]]  # a common factor: correlated columns
    w = rng.standard_normal(d) * (rng.random(d) < 0.5)
    ws = [
        w,
        w + 0.25 * rng.standard_normal(d) * (w != 0),
        rng.standard_normal(d),
        rng.standard_normal(d),
    ]
    Y = np.column_stack([X @ v for v in ws]) + 0.5 * rng.standard_normal((n, 4)) + 3.0
    return X, Y


def test_graph_lasso_converges_and_finds_the_correlated_pair():
    X, Y = correlated_pair_problem()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)  # it must converge, not cap out
        graph = fit_task_graph(X, Y)
    assert graph.duality_gap <= GRAPH_GAP_TOL
    assert graph.edges == [(0, 1)]
    assert graph.correlation[0, 1] > GRAPH_THRESHOLD
    a, b, corr = graph.edge_correlations()[0]
    assert (a, b) == (0, 1) and corr == pytest.approx(graph.correlation[0, 1])


def test_graph_rule_is_stable_across_tolerances():
    X, Y = correlated_pair_problem(seed=1)
    loose = fit_task_graph(X, Y, gap_tol=1e-5)
    tight = fit_task_graph(X, Y, gap_tol=1e-10)
    assert loose.edges == tight.edges
    np.testing.assert_allclose(loose.correlation, tight.correlation, atol=1e-2)


def test_a_capped_graph_lasso_warns_with_its_duality_gap():
    X, Y = correlated_pair_problem(seed=2)
    with pytest.warns(ConvergenceWarning, match="duality gap"):
        graph = fit_task_graph(X, Y, max_iter=3)
    assert graph.duality_gap > GRAPH_GAP_TOL


def test_duality_gap_is_zero_at_the_optimum_and_positive_elsewhere():
    X, Y = correlated_pair_problem(seed=3)
    Yc, Xc = Y - Y.mean(0), X - X.mean(0)
    W, gap = per_task_lasso(Xc, Yc, 5.0, gap_tol=1e-12)
    smooth = MultiTaskQuadratic(Xc, Yc)
    assert np.max(lasso_duality_gap(smooth, W, 5.0)) <= 1e-10
    assert np.min(lasso_duality_gap(smooth, 0.5 * W, 5.0)) > 1e-4
