"""Proportion-SVM (alter-∝SVM; Yu, Liu, Kumar, Jebara & Chang, ICML 2013; paper Eq. 8).

Learning from label proportions: instances come in bags ``B_k`` with a known share ``p_k``
of positives, instance labels are latent. alter-∝SVM minimizes

    J(w, b, y) = ½‖w‖² + C* Σ_i s_i L(y_i f(x_i)) + C_p Σ_k |B_k| · ℓ_ε(p̃_k(y) − p_k)

with ``f(x) = w·x + b``, ``L(m) = max(0, 1 − m)²`` (squared hinge; the paper's plain hinge
is replaced by its square so that the inner SVM is solved by a few exact Newton steps,
see ``l2svm.py``), ``ℓ_ε(e) = max(0, |e| − ε)`` and ``p̃_k(y)`` the share of positives
the labels give bag ``k``. It alternates (i) the SVM for fixed labels and (ii) the
optimal labels for fixed ``f`` (``relabel_bags``), annealing ``C*`` from ``1e-4 C`` up to
``C`` by ×1.5 and keeping the restart with the lowest objective.
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.kernel_approximation import Nystroem
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, check_random_state, validate_data

from tumorchar.models.l2svm import SquaredHingeProblem, fit_squared_hinge

_ANNEAL_START = 1e-4
_ANNEAL_FACTOR = 1.5


def proportion_loss(share: np.ndarray, proportion: np.ndarray, epsilon: float) -> np.ndarray:
    """ε-insensitive absolute error ℓ_ε(p̃ − p) = max(0, |p̃ − p| − ε)."""
    return np.maximum(0.0, np.abs(share - proportion) - epsilon)


def squared_hinge(margin: np.ndarray) -> np.ndarray:
    """L(m) = max(0, 1 − m)²."""
    return np.maximum(0.0, 1.0 - margin) ** 2


@dataclass(frozen=True)
class BagIndex:
    """Bag membership: each instance's bag id and the size of every bag (all sizes ≥ 1)."""

    bags: np.ndarray
    sizes: np.ndarray

    @classmethod
    def from_ids(cls, bags: np.ndarray, n_bags: int) -> BagIndex:
        return cls(bags=bags, sizes=np.bincount(bags, minlength=n_bags))

    def shares(self, labels: np.ndarray) -> np.ndarray:
        """p̃_k: the share of positive labels in each bag."""
        return np.bincount(self.bags, weights=labels > 0, minlength=self.sizes.size) / self.sizes


def relabel_bags(
    scores: np.ndarray,
    index: BagIndex,
    proportions: np.ndarray,
    penalty: float,
    epsilon: float,
    sample_weight: np.ndarray | None = None,
) -> np.ndarray:
    """Optimal labels y ∈ {−1, +1}ⁿ for fixed scores f (step (ii) of alter-∝SVM).

    For every bag it minimizes Σ_{i∈B} s_i L(y_i f_i) + penalty · |B| · ℓ_ε(r/|B| − p) over
    the number r of positives: for a given r the best labels make positive the r instances
    with the largest gains s_i (L(−f_i) − L(f_i)), so the cost of every r of every bag comes
    from one sort (by bag, then gain) and one cumulative sum. ``penalty`` is C_p / C*.
    """
    s = 1.0 if sample_weight is None else sample_weight
    loss_neg = s * squared_hinge(-scores)
    gains = loss_neg - s * squared_hinge(scores)
    order = np.lexsort((-gains, index.bags))  # by bag, largest gain first
    n_bags, sizes = index.sizes.size, index.sizes
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    bag_of = np.repeat(np.arange(n_bags), sizes)
    rank = np.arange(scores.size) - starts[bag_of] + 1  # r if this instance is the r-th positive
    cumulative = np.cumsum(gains[order])
    before = np.concatenate([[0.0], cumulative])[starts]
    base = np.bincount(index.bags, weights=loss_neg, minlength=n_bags)
    cost = base[bag_of] - (cumulative - before[bag_of])
    cost += (
        penalty
        * sizes[bag_of]
        * proportion_loss(rank / sizes[bag_of], proportions[bag_of], epsilon)
    )
    cost_none = base + penalty * sizes * proportion_loss(0.0, proportions, epsilon)
    # per bag, the r of least cost (the smaller r on a tie), r = 0 included
    all_cost = np.concatenate([cost, cost_none])
    all_rank = np.concatenate([rank, np.zeros(n_bags, dtype=rank.dtype)])
    all_bag = np.concatenate([bag_of, np.arange(n_bags)])
    by_bag_then_cost = np.lexsort((all_rank, all_cost, all_bag))
    n_pos = all_rank[by_bag_then_cost[starts + np.arange(n_bags)]]
    labels = np.full(scores.size, -1, dtype=np.int8)
    labels[order[rank <= n_pos[bag_of]]] = 1
    return labels


class ProportionSVM(ClassifierMixin, BaseEstimator):
    """alter-∝SVM: a linear (or approximate-RBF) SVM learned from bag label proportions.

    Parameters
    ----------
    C : cost of the instance losses (final value of the annealed C*).
    C_p : cost of the bag proportion errors.
    kernel : ``"linear"`` (the paper's) or ``"rbf"`` through a Nystroem approximation
        of ``exp(−gamma ‖x − x'‖²)`` with ``n_components`` landmarks.
    epsilon : width of the ε-insensitive proportion error (Eq. 8's |p̃ − p| ≤ ε).
    n_restarts : random initial labellings; the fit with the lowest objective is kept.
    init : ``"random"`` (Yu et al.: every instance's initial label is +1 or -1 with
        probability 1/2, so restarts start from different labellings whatever the
        proportions) or ``"proportions"`` (random labels giving each bag round(p_k |B_k|)
        positives; with proportions 0 and 1 every restart starts from the same labels).
    anneal : anneal C* from 1e-4·C to C by ×1.5 (Yu et al.); False fits at C* = C only.
    max_alternations : cap on the SVM / relabel alternations at each C*.
    gamma, n_components : RBF kernel width (``"scale"``: 1 / (d · Var X)) and landmarks.
    random_state : seed (int, RandomState or None) of the initial labellings and of the
        Nystroem landmarks.

    ``fit(X, y=None, *, bags=None, proportions=None, sample_weight=None)``: the bags and
    their proportions are per-sample data and go to ``fit`` as keywords. ``fit(X, y)``
    without bags is the fully labelled special case, stated rather than guessed: every
    instance is its own bag whose proportion is 1 for ``classes_[1]`` and 0 for
    ``classes_[0]`` (two classes only), i.e. an L2-SVM on y. Giving both y and bags is an
    error.

    Fitted attributes: ``coef_`` (in the kernel feature space for RBF), ``intercept_``,
    ``objective_`` (J of the kept restart), ``restart_objectives_``, ``train_labels_``
    (the latent labels in {0, 1}), ``classes_`` ([0, 1] with bags, the labels of y
    without), ``n_features_in_``.

    Documented behaviour: a single bag is accepted (the problem is then an SVM whose
    positive share is held near p); bags whose proportions are all 0 or all 1 give a
    one-class problem and are rejected.
    """

    _parameter_constraints: dict = {
        "C": [Interval(Real, 0, None, closed="neither")],
        "C_p": [Interval(Real, 0, None, closed="left")],
        "kernel": [StrOptions({"linear", "rbf"})],
        "epsilon": [Interval(Real, 0, 1, closed="left")],
        "n_restarts": [Interval(Integral, 1, None, closed="left")],
        "init": [StrOptions({"random", "proportions"})],
        "anneal": ["boolean"],
        "max_alternations": [Interval(Integral, 1, None, closed="left")],
        "gamma": [StrOptions({"scale"}), Interval(Real, 0, None, closed="neither")],
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        C=1.0,
        C_p=1.0,
        kernel="linear",
        epsilon=0.0,
        n_restarts=10,
        init="random",
        anneal=True,
        max_alternations=100,
        gamma="scale",
        n_components=256,
        random_state=None,
    ):
        self.C = C
        self.C_p = C_p
        self.kernel = kernel
        self.epsilon = epsilon
        self.n_restarts = n_restarts
        self.init = init
        self.anneal = anneal
        self.max_alternations = max_alternations
        self.gamma = gamma
        self.n_components = n_components
        self.random_state = random_state

    # -- validation ---------------------------------------------------------------------
    @staticmethod
    def _validate_bags(bags, proportions, n_samples):
        bags = np.asarray(bags)
        proportions = np.asarray(proportions, dtype=np.float64)
        if bags.shape != (n_samples,):
            raise ValueError(f"bags must have shape ({n_samples},); got {bags.shape}")
        if not np.issubdtype(bags.dtype, np.integer):
            raise ValueError("bags must hold integer bag ids")
        if proportions.ndim != 1 or proportions.size == 0:
            raise ValueError("proportions must be a 1-d array indexed by bag id")
        if not np.all(np.isfinite(proportions)) or np.any((proportions < 0) | (proportions > 1)):
            bad = np.flatnonzero(~((proportions >= 0) & (proportions <= 1)))
            raise ValueError(
                f"proportions must lie in [0, 1]; bag(s) {bad.tolist()} have "
                f"{proportions[bad].tolist()}"
            )
        if bags.min() < 0 or bags.max() >= proportions.size:
            raise ValueError(
                f"bag ids must lie in [0, {proportions.size - 1}] (one proportion per bag); "
                f"got ids from {bags.min()} to {bags.max()}"
            )
        counts = np.bincount(bags, minlength=proportions.size)
        if np.any(counts == 0):
            raise ValueError(
                f"bag id(s) {np.flatnonzero(counts == 0).tolist()} have a proportion but no "
                "instance; drop them from proportions or renumber the bags"
            )
        if np.all(proportions == 0) or np.all(proportions == 1):
            raise ValueError("every bag has proportion 0 (or every bag 1): only one class to learn")
        return bags.astype(np.intp), proportions

    # -- fitting ------------------------------------------------------------------------
    def _feature_map(self, X, seed):
        if self.kernel == "linear":
            return None
        gamma = self.gamma
        if gamma == "scale":
            gamma = 1.0 / (X.shape[1] * X.var()) if X.var() > 0 else 1.0
        n_components = min(int(self.n_components), X.shape[0])
        return Nystroem(gamma=gamma, n_components=n_components, random_state=seed).fit(X)

    def _c_schedule(self):
        if not self.anneal:
            return [float(self.C)]
        schedule, c = [], _ANNEAL_START * self.C
        while c < self.C:
            schedule.append(c)
            c *= _ANNEAL_FACTOR
        return schedule + [float(self.C)]

    def _objective(self, theta, problem, labels, index, proportions, c_star=None):
        """J(w, b, y) of the module docstring at C* (default C)."""
        c_star = self.C if c_star is None else c_star
        loss = float(problem.s @ squared_hinge(labels * (problem.Z @ theta)))
        errors = proportion_loss(index.shares(labels), proportions, self.epsilon)
        bag_term = float(index.sizes @ errors)
        return 0.5 * float(theta[:-1] @ theta[:-1]) + c_star * loss + self.C_p * bag_term

    def _initial_labels(self, index, proportions, rng):
        """Random labels: fair coin flips (``init="random"``) or, per bag, round(p_k |B_k|)
        positives at random places (``init="proportions"``)."""
        if self.init == "random":
            return np.where(rng.random(index.bags.size) < 0.5, 1, -1).astype(np.int8)
        order = np.lexsort((rng.random(index.bags.size), index.bags))
        starts = np.concatenate([[0], np.cumsum(index.sizes)[:-1]])
        bag_of = np.repeat(np.arange(index.sizes.size), index.sizes)
        rank = np.arange(index.bags.size) - starts[bag_of]
        n_pos = np.rint(proportions * index.sizes)
        labels = np.full(index.bags.size, -1, dtype=np.int8)
        labels[order[rank < n_pos[bag_of]]] = 1
        return labels

    def _alternate(self, problem, labels, index, proportions, seen):
        """Steps (i) and (ii) until the labels are stable, at each C* of the schedule.

        The run from a given C* on depends only on the labels it starts from (the SVM
        solution for fixed labels is unique), so a restart that reaches a (C*, labels) state
        met by an earlier restart ends with that restart's result, kept in ``seen``.
        """
        theta, visited = None, []
        for stage, c_star in enumerate(self._c_schedule()):
            key = (stage, labels.tobytes())
            if key in seen:
                theta, labels = seen[key]
                break
            visited.append(key)
            for _ in range(int(self.max_alternations)):
                theta = fit_squared_hinge(problem, labels, c_star, theta0=theta)
                scores = problem.Z @ theta
                new = relabel_bags(
                    scores, index, proportions, self.C_p / c_star, self.epsilon, problem.s
                )
                if np.array_equal(new, labels):
                    break
                labels = new
        seen.update(dict.fromkeys(visited, (theta, labels)))
        return theta, labels

    def _bags_from_labels(self, y, n):
        """Singleton bags with proportion 1 for classes_[1] and 0 for classes_[0]."""
        check_classification_targets(y)
        self.classes_, encoded = np.unique(np.asarray(y), return_inverse=True)
        if self.classes_.size > 2:
            raise ValueError(
                "Only binary classification is supported: ProportionSVM learns two "
                f"classes, y has {self.classes_.size}"
            )
        if self.classes_.size < 2:
            raise ValueError("y holds one class only: nothing to separate")
        return np.arange(n), encoded.astype(np.float64)

    def fit(self, X, y=None, *, bags=None, proportions=None, sample_weight=None):
        """Fit from features X (n, d), bag ids ``bags`` (n,) and ``proportions[bag id]``,
        or from labels y (class docstring)."""
        self._validate_params()
        if y is not None and bags is not None:
            raise ValueError("give either y (labelled instances) or bags and proportions")
        if bags is None:
            if y is None:
                raise ValueError(
                    "requires y to be passed, but the target y is None: ProportionSVM.fit "
                    "needs bags and proportions, or labels y"
                )
            X, y = validate_data(self, X, y, dtype=np.float64)
            bags, proportions = self._bags_from_labels(y, X.shape[0])
        else:
            if proportions is None:
                raise ValueError("bags need their proportions")
            X = validate_data(self, X, dtype=np.float64)
            self.classes_ = np.array([0, 1])
        bags, proportions = self._validate_bags(bags, proportions, X.shape[0])
        if sample_weight is not None:
            sample_weight = np.asarray(sample_weight, dtype=np.float64)
            if sample_weight.shape != (X.shape[0],) or np.any(sample_weight < 0):
                raise ValueError("sample_weight must be non-negative with shape (n,)")
            if not np.any(sample_weight > 0):
                raise ValueError("sample weights are all zero: no instance to learn from")
        rng = check_random_state(self.random_state)
        map_seed, *restart_seeds = rng.randint(0, 2**31 - 1, size=int(self.n_restarts) + 1)
        self.feature_map_ = self._feature_map(X, int(map_seed))
        features = X if self.feature_map_ is None else self.feature_map_.transform(X)
        problem = SquaredHingeProblem.from_features(features, sample_weight)
        index = BagIndex.from_ids(bags, proportions.size)

        best, seen = None, {}
        self.restart_objectives_ = []
        for seed in restart_seeds:
            labels = self._initial_labels(index, proportions, np.random.default_rng(seed))
            theta, labels = self._alternate(problem, labels, index, proportions, seen)
            obj = self._objective(theta, problem, labels, index, proportions)
            self.restart_objectives_.append(obj)
            if best is None or obj < best[0]:
                best = (obj, theta, labels)
        self.objective_, theta, labels = best
        self.coef_, self.intercept_ = theta[:-1].copy(), float(theta[-1])
        self.train_labels_ = (labels > 0).astype(np.int64)
        return self

    def decision_function(self, X):
        """Signed score f(x) = w·φ(x) + b; positive means class 1."""
        check_is_fitted(self, "coef_")
        X = validate_data(self, X, dtype=np.float64, reset=False)
        if self.feature_map_ is not None:
            X = self.feature_map_.transform(X)
        return X @ self.coef_ + self.intercept_

    def predict(self, X):
        """Labels: ``classes_[1]`` where f(x) > 0, else ``classes_[0]``."""
        positive = self.decision_function(X) > 0
        return self.classes_[positive.astype(np.int64)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False
        return tags
