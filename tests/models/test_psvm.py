"""ProportionSVM (alter-∝SVM) and its inner L2-SVM solver."""

import itertools

import numpy as np
import pytest
from scipy.optimize import minimize
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.svm import LinearSVC
from threadpoolctl import threadpool_limits

from tumorchar.models import ProportionSVM
from tumorchar.models.l2svm import (
    SquaredHingeProblem,
    fit_squared_hinge,
    squared_hinge_objective,
)
from tumorchar.models.psvm import BagIndex, proportion_loss, relabel_bags, squared_hinge


@pytest.fixture(autouse=True)
def _one_blas_thread():
    # small solves on a shared machine: multithreaded BLAS only oversubscribes the cores
    with threadpool_limits(limits=1):
        yield


def class_direction(d):
    v = np.random.default_rng(1234).normal(size=d)
    return v / np.linalg.norm(v)


def two_gaussians(n, d=5, shift=1.5, seed=0):
    """Classes ±1 at ±shift along a fixed direction; sign(x·direction) is the Bayes rule."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=n)
    X = rng.normal(size=(n, d)) + shift * np.outer(2 * y - 1, class_direction(d))
    return X, y


def mixed_bags(y, n_bags, purity, seed=0):
    """Bags whose positive share is `purity` (positive-majority bags) or 1 − purity."""
    rng = np.random.default_rng(seed)
    pos, neg = rng.permutation(np.flatnonzero(y == 1)), rng.permutation(np.flatnonzero(y == 0))
    bags = np.empty(y.size, dtype=int)
    half = n_bags // 2
    # positive-majority bags get `purity` of their members from the positives
    pos_main, pos_rest = np.split(pos, [int(round(purity * pos.size))])
    neg_main, neg_rest = np.split(neg, [int(round(purity * neg.size))])
    for k, chunk in enumerate(np.array_split(np.concatenate([pos_main, neg_rest]), half)):
        bags[chunk] = k
    for k, chunk in enumerate(np.array_split(np.concatenate([neg_main, pos_rest]), half)):
        bags[chunk] = half + k
    proportions = np.array([y[bags == k].mean() for k in range(n_bags)])
    return bags, proportions


# -- inner solver -------------------------------------------------------------------------
def test_newton_solver_reaches_the_minimum_of_the_weighted_squared_hinge():
    X, y = two_gaussians(80, d=4, shift=0.5)
    signs = 2.0 * y - 1
    weights = np.random.default_rng(1).uniform(0.2, 2.0, size=y.size)
    problem = SquaredHingeProblem.from_features(X, weights)
    theta = fit_squared_hinge(problem, signs, scale=0.7)
    reference = minimize(
        squared_hinge_objective,
        np.zeros(X.shape[1] + 1),
        args=(problem, signs, 0.7),
        method="L-BFGS-B",
        options={"gtol": 1e-10, "ftol": 1e-14, "maxiter": 5000},
    )
    assert squared_hinge_objective(theta, problem, signs, 0.7) <= reference.fun + 1e-8
    np.testing.assert_allclose(theta, reference.x, atol=1e-4)


def test_newton_solver_warm_start_gives_the_same_solution():
    X, y = two_gaussians(60, d=3, shift=0.3)
    problem = SquaredHingeProblem.from_features(X)
    cold = fit_squared_hinge(problem, 2.0 * y - 1, scale=2.0)
    warm = fit_squared_hinge(problem, 2.0 * y - 1, scale=2.0, theta0=np.ones(4) * 3)
    np.testing.assert_allclose(warm, cold, atol=1e-8)


# -- relabelling ----------------------------------------------------------------------------
@pytest.mark.parametrize("epsilon", [0.0, 0.15])
@pytest.mark.parametrize("penalty", [0.05, 1.0, 20.0])
def test_relabelling_is_optimal_against_brute_force(epsilon, penalty):
    rng = np.random.default_rng(int(penalty * 100) + int(epsilon * 10))
    for _ in range(20):
        sizes = rng.integers(1, 5, size=rng.integers(1, 4))
        sizes = sizes[np.cumsum(sizes) <= 10] if sizes.sum() > 10 else sizes
        bags = rng.permutation(np.repeat(np.arange(sizes.size), sizes))
        scores = rng.normal(scale=1.5, size=bags.size)
        weights = rng.uniform(0.5, 2.0, size=bags.size)
        proportions = rng.random(sizes.size)

        def cost(
            labels, bags=bags, scores=scores, weights=weights, proportions=proportions, sizes=sizes
        ):
            total = float(weights @ squared_hinge(labels * scores))
            for k, size in enumerate(sizes):
                share = (labels[bags == k] > 0).mean()
                total += penalty * size * proportion_loss(share, proportions[k], epsilon)
            return total

        labels = relabel_bags(
            scores, BagIndex.from_ids(bags, sizes.size), proportions, penalty, epsilon, weights
        )
        best = min(cost(np.array(c)) for c in itertools.product([-1.0, 1.0], repeat=bags.size))
        assert cost(labels.astype(float)) == pytest.approx(best, abs=1e-9)


# -- learning from proportions -------------------------------------------------------------
def test_pure_bags_reduce_to_the_supervised_svm():
    X, y = two_gaussians(300, shift=0.8)
    bags, proportions = mixed_bags(y, 6, purity=1.0)
    assert set(proportions) == {0.0, 1.0}
    # a large C_p makes the proportions the hard constraint of Eq. 8 (ε = 0)
    model = ProportionSVM(C=1.0, C_p=100.0, n_restarts=2, random_state=0)
    model.fit(X, bags=bags, proportions=proportions)
    np.testing.assert_array_equal(model.train_labels_, y)

    supervised = fit_squared_hinge(SquaredHingeProblem.from_features(X), 2.0 * y - 1, 1.0)
    np.testing.assert_allclose(model.coef_, supervised[:-1], atol=1e-6)
    assert model.intercept_ == pytest.approx(supervised[-1], abs=1e-6)

    X_test, _ = two_gaussians(500, shift=0.8, seed=1)
    sk = LinearSVC(C=1.0, intercept_scaling=100.0, tol=1e-8, max_iter=100_000).fit(X, y)
    assert (model.predict(X_test) == sk.predict(X_test)).mean() >= 0.98


def test_accuracy_degrades_gracefully_as_bags_mix():
    X, y = two_gaussians(600, shift=1.2, seed=3)
    X_test, y_test = two_gaussians(1000, shift=1.2, seed=4)
    accuracy = {}
    for purity in (1.0, 0.9, 0.8, 0.7):
        bags, proportions = mixed_bags(y, 8, purity=purity, seed=5)
        model = ProportionSVM(n_restarts=3, random_state=0).fit(
            X, bags=bags, proportions=proportions
        )
        accuracy[purity] = (model.predict(X_test) == y_test).mean()
    bayes = (((X_test @ class_direction(5)) > 0) == y_test).mean()
    assert accuracy[1.0] >= bayes - 0.02
    assert accuracy[0.9] >= bayes - 0.03
    assert accuracy[0.8] >= bayes - 0.05
    assert accuracy[0.7] >= bayes - 0.10
    # graceful: no collapse to chance, and never much better than the pure-bag fit
    assert min(accuracy.values()) > 0.75
    assert all(a <= accuracy[1.0] + 0.02 for a in accuracy.values())


def test_restarts_keep_the_lowest_objective():
    X, y = two_gaussians(200, shift=0.6, seed=7)
    bags, proportions = mixed_bags(y, 4, purity=0.7, seed=7)
    settings = dict(anneal=False, random_state=11)
    one = ProportionSVM(n_restarts=1, **settings).fit(X, bags=bags, proportions=proportions)
    many = ProportionSVM(n_restarts=8, **settings).fit(X, bags=bags, proportions=proportions)
    assert many.restart_objectives_[0] == pytest.approx(one.objective_)
    assert many.objective_ == pytest.approx(min(many.restart_objectives_))
    assert many.objective_ <= one.objective_ + 1e-9
    assert len(set(np.round(many.restart_objectives_, 6))) > 1  # the restarts differ


def test_annealing_lowers_the_objective():
    lower = []
    for seed in range(6):
        X, y = two_gaussians(200, shift=0.6, seed=seed)
        bags, proportions = mixed_bags(y, 4, purity=0.7, seed=seed)
        fits = [
            ProportionSVM(n_restarts=1, anneal=anneal, random_state=seed).fit(
                X, bags=bags, proportions=proportions
            )
            for anneal in (True, False)
        ]
        lower.append(fits[0].objective_ - fits[1].objective_)
    assert np.mean(lower) < 0
    assert sum(d <= 1e-9 for d in lower) >= 4


def test_rbf_kernel_learns_a_non_linear_boundary_from_proportions():
    rng = np.random.default_rng(0)
    X = rng.uniform(-2, 2, size=(400, 2))
    y = (np.linalg.norm(X, axis=1) < 1.3).astype(int)
    bags, proportions = mixed_bags(y, 6, purity=0.9, seed=0)
    X_test = rng.uniform(-2, 2, size=(800, 2))
    y_test = (np.linalg.norm(X_test, axis=1) < 1.3).astype(int)
    rbf = ProportionSVM(kernel="rbf", C=10.0, n_restarts=2, n_components=100, random_state=0)
    linear = ProportionSVM(C=10.0, n_restarts=2, random_state=0)
    acc_rbf = (rbf.fit(X, bags=bags, proportions=proportions).predict(X_test) == y_test).mean()
    acc_linear = (
        linear.fit(X, bags=bags, proportions=proportions).predict(X_test) == y_test
    ).mean()
    assert acc_rbf >= 0.85
    assert acc_rbf > acc_linear + 0.1


# -- estimator conventions ----------------------------------------------------------------
def test_scikit_learn_conventions():
    X, y = two_gaussians(120, seed=2)
    bags, proportions = mixed_bags(y, 4, purity=0.8, seed=2)
    model = ProportionSVM(C=0.5, n_restarts=2, random_state=3)
    assert clone(model).get_params() == model.get_params()
    with pytest.raises(NotFittedError):
        model.predict(X)
    a = model.fit(X, bags=bags, proportions=proportions)
    b = clone(model).fit(X, bags=bags, proportions=proportions)
    np.testing.assert_array_equal(a.decision_function(X), b.decision_function(X))
    assert set(np.unique(a.predict(X))) <= {0, 1}
    np.testing.assert_array_equal(a.predict(X), (a.decision_function(X) > 0).astype(int))
    assert a.classes_.tolist() == [0, 1] and a.n_features_in_ == X.shape[1]
    with pytest.raises(ValueError, match="features"):
        a.predict(X[:, :2])


# -- bad input ------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [-0.1, 1.2, np.nan])
def test_proportion_outside_unit_interval_is_rejected(bad):
    X, y = two_gaussians(40)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ProportionSVM().fit(X, bags=np.arange(40) % 2, proportions=np.array([0.3, bad]))


def test_single_bag_is_accepted_and_keeps_its_share():
    X, y = two_gaussians(200, shift=2.0, seed=9)
    model = ProportionSVM(C_p=10.0, n_restarts=2, random_state=0)
    model.fit(X, bags=np.zeros(200, dtype=int), proportions=np.array([y.mean()]))
    assert abs(model.train_labels_.mean() - y.mean()) <= 0.02
    # the only split that keeps the share is (up to a swap of names) the real one
    agreement = (model.predict(X) == y).mean()
    assert max(agreement, 1 - agreement) >= 0.9


def test_empty_bag_id_is_rejected_by_name():
    X, _ = two_gaussians(30)
    bags = np.where(np.arange(30) < 15, 0, 2)
    with pytest.raises(ValueError, match=r"bag id\(s\) \[1\]"):
        ProportionSVM().fit(X, bags=bags, proportions=np.array([0.2, 0.5, 0.8]))


def test_bag_ids_must_index_the_proportions():
    X, _ = two_gaussians(30)
    with pytest.raises(ValueError, match="bag ids"):
        ProportionSVM().fit(X, bags=np.arange(30) % 3, proportions=np.array([0.2, 0.5]))
    with pytest.raises(ValueError, match="shape"):
        ProportionSVM().fit(X, bags=np.zeros(29, dtype=int), proportions=np.array([0.2]))


def test_one_class_proportions_are_rejected():
    X, _ = two_gaussians(30)
    with pytest.raises(ValueError, match="one class"):
        ProportionSVM().fit(X, bags=np.arange(30) % 2, proportions=np.array([0.0, 0.0]))


def test_nan_features_are_rejected():
    X, _ = two_gaussians(30)
    X[4, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        ProportionSVM().fit(X, bags=np.arange(30) % 2, proportions=np.array([0.2, 0.8]))


@pytest.mark.parametrize(
    "params", [dict(C=0.0), dict(epsilon=1.5), dict(kernel="poly"), dict(n_restarts=0)]
)
def test_bad_settings_are_rejected(params):
    X, _ = two_gaussians(30)
    with pytest.raises(ValueError):
        ProportionSVM(**params).fit(X, bags=np.arange(30) % 2, proportions=np.array([0.2, 0.8]))


def test_uniform_sample_weight_acts_as_a_larger_C():
    X, y = two_gaussians(150, shift=0.7, seed=8)
    bags, proportions = mixed_bags(y, 4, purity=0.8, seed=8)
    weighted = ProportionSVM(C=1.0, n_restarts=2, random_state=5)
    weighted.fit(X, bags=bags, proportions=proportions, sample_weight=np.full(150, 2.0))
    scaled = ProportionSVM(C=2.0, n_restarts=2, random_state=5).fit(
        X, bags=bags, proportions=proportions
    )
    np.testing.assert_allclose(weighted.decision_function(X), scaled.decision_function(X))
    with pytest.raises(ValueError, match="sample_weight"):
        ProportionSVM().fit(X, bags=bags, proportions=proportions, sample_weight=-np.ones(150))
