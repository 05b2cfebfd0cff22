"""Unsupervised benign / malignant classification (paper section IV, Fig. 3, Table III).

Fitted on the training fold only: standardize, k-means with k = 2 (Eq. 7), name the two
clusters benign (0) / malignant (1), then one of

- ``method="psvm"`` (proposed): a proportion-SVM learns from bags whose label proportions
  come from the clustering (Eq. 9), with the ε of Eq. 8 leaving room for outliers;
- ``method="cluster"``: the clustering alone, a test case takes its nearest centroid's name;
- ``method="svm"``: a linear SVM trained on the named cluster assignments;
- ``method="rf"``: a random forest trained on the named cluster assignments.

Cluster naming:

- ``naming="label_free"`` (default): the cluster whose training cases have the larger mean
  ``naming_score`` is malignant. The caller supplies the score; for lung nodules the size ×
  density of the patch (e.g. equivalent diameter × mean intensity inside the mask: larger,
  denser nodules are more often malignant); for pancreas MRI the mean T2 intensity of the
  ROI (IPMN cysts hold fluid and are T2-hyperintense). No ground truth is read: a ``y``
  given to ``fit`` (as `cross_val_score` and `Pipeline` pass it) is ignored.
- ``naming="labels"``: THE PAPER'S PROTOCOL, which looks at the ground truth of the
  training fold (``fit(X, y)``): the cluster holding the larger share of malignant training
  cases is malignant. It is kept so both can be reported; it is not label-free.

Bags and proportions of ∝SVM. The paper's Eq. 9, p_v = n⁻¹ Σ_u I(y_u = v), does not say
which n nor what "the proportion of group v" is a proportion of, and how the bags are
formed decides whether ∝SVM can move away from the clusters at all. The readings (with
n_M the size of the malignant cluster, n the training-fold size):

- ``bags="clusters", proportions="hard"`` (round 1): n read as the cluster's size, so the
  malignant cluster's share of positives is 1 and the benign one's 0; only ε of each
  cluster can change side, so ∝SVM is an SVM on the clusters up to ε.
- ``bags="clusters", proportions="literal"``: n read as the training-set size, as printed:
  cluster v holds the share n_v / n of its own class v, so the malignant cluster's share of
  positives is n_M / n and the benign cluster's 1 − n_B / n = n_M / n as well. Both bags
  then carry the same proportion and ∝SVM decides which instances are positive.
- ``bags="clusters", proportions="soft"``: the mean Gaussian posterior of the malignant
  centroid within each cluster (isotropic, pooled within-cluster variance), so cases near
  the boundary make the proportions less than pure.
- ``bags="one"``: the whole training fold is one bag whose share of positives is the
  cluster-estimated n_M / n; the clusters fix only how many cases are malignant.
- ``bags="subclusters"``: k-means with ``n_subclusters`` (> 2) clusters gives the bags; a
  bag's proportion is the share of its members in the malignant 2-cluster, so bags that
  straddle the 2-cluster boundary get proportions strictly between 0 and 1.

∝SVM starts from random labels (``init="random"``, Yu et al.) on every restart, and
``flip_share_`` reports the share of training cases whose final ∝SVM label differs from
their cluster's name.
"""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.cluster import KMeans
from sklearn.ensemble import RandomForestClassifier
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, check_random_state, validate_data

from tumorchar.models.psvm import ProportionSVM

METHODS = ("psvm", "cluster", "svm", "rf")
NAMINGS = ("label_free", "labels")
BAGS = ("clusters", "one", "subclusters")
PROPORTIONS = ("hard", "literal", "soft")
# (bags, proportions) of each ∝SVM reading, by the name results and reports use
PSVM_VARIANTS = {
    "hard": ("clusters", "hard"),
    "literal": ("clusters", "literal"),
    "soft": ("clusters", "soft"),
    "one-bag": ("one", "hard"),
    "subclusters": ("subclusters", "hard"),
}
# The reading UnsupervisedClassifier uses by default (and E2's proposed row). Chosen on the
# REAL LIDC max-slice crops (895 nodules, GIST, 10 folds by patient): no reading is told
# apart from chance there (AUC 0.498-0.561, every Nadeau-Bengio interval contains 0.5) nor
# from clustering + SVM (0.489); `literal` has the best point estimates (acc. 48.4 %, AUC
# 0.561) but was the worst on the phantom (sensitivity 1.1 %). With no evidence for a change
# the default stays the round-1 reading; every reading keeps its row in the report.
DEFAULT_PSVM_VARIANT = "hard"
_ONE_CLUSTER = (
    "k-means put every training case in one cluster (all feature vectors are identical); "
    "the two classes cannot be separated"
)


def size_density_score(images, masks, size_mm=None) -> np.ndarray:
    """Label-free naming score per case: size × density of the tumor.

    density_u = mean of image u inside its mask − minimum of image u (≥ 0 whatever the
    intensity unit, e.g. HU); the score is size_mm_u × density_u, or density_u alone when
    no size is given (the MRI rule: the mean T2 intensity of the ROI above its darkest
    voxel). ``images`` and ``masks`` are (N, ...) arrays (2D slices or 3D volumes).
    """
    images = np.asarray(images, dtype=np.float64)
    masks = np.asarray(masks, dtype=bool)
    if images.shape != masks.shape:
        raise ValueError(f"images {images.shape} and masks {masks.shape} differ in shape")
    flat_images = images.reshape(images.shape[0], -1)
    flat_masks = masks.reshape(masks.shape[0], -1)
    counts = flat_masks.sum(axis=1)
    if np.any(counts == 0):
        raise ValueError(f"empty mask for case(s) at row(s) {np.flatnonzero(counts == 0).tolist()}")
    inside = (flat_images * flat_masks).sum(axis=1) / counts
    density = inside - flat_images.min(axis=1)
    return density if size_mm is None else np.asarray(size_mm, dtype=np.float64) * density


def name_clusters_label_free(clusters: np.ndarray, naming_score: np.ndarray) -> int:
    """Index of the malignant cluster: the one with the larger mean naming score."""
    means = [naming_score[clusters == v].mean() for v in (0, 1)]
    return int(np.argmax(means))


def name_clusters_with_labels(clusters: np.ndarray, y: np.ndarray) -> int:
    """PAPER'S PROTOCOL (uses ground truth): the cluster with the larger malignant share."""
    shares = [y[clusters == v].mean() for v in (0, 1)]
    return int(np.argmax(shares))


def soft_malignant_share(X: np.ndarray, centers: np.ndarray, clusters: np.ndarray, malignant):
    """Per cluster, the mean posterior P(malignant | x) of an isotropic two-Gaussian model.

    P(v | x) ∝ exp(−‖x − μ_v‖² / (2σ²)) with σ² the pooled within-cluster variance per
    feature, Σ_u ‖x_u − μ_{c_u}‖² / (n d).
    """
    sq = ((X[:, None, :] - centers[None, :, :]) ** 2).sum(axis=2)
    sigma2 = max(sq[np.arange(X.shape[0]), clusters].sum() / X.size, 1e-12)
    logits = -sq / (2.0 * sigma2)
    logits -= logits.max(axis=1, keepdims=True)
    post = np.exp(logits)
    post /= post.sum(axis=1, keepdims=True)
    return np.array([post[clusters == v, malignant].mean() for v in (0, 1)])


def _seed(rng: np.random.RandomState) -> int:
    return int(rng.randint(0, 2**31 - 1))


class UnsupervisedClassifier(ClassifierMixin, BaseEstimator):
    """k-means (k = 2) → cluster naming → ∝SVM or a Table III baseline; labels 0/1.

    Parameters
    ----------
    method : ``"psvm"`` (proposed), ``"cluster"``, ``"svm"`` or ``"rf"`` (module docstring).
    naming : ``"label_free"`` (needs ``naming_score`` in ``fit``; y is ignored) or
        ``"labels"`` (the paper's protocol, needs ``y`` in ``fit``).
    bags, proportions : how ∝SVM's bags and their proportions are formed (module
        docstring); ``n_subclusters`` : number of bags with ``bags="subclusters"``.
    n_init : k-means initializations.
    C, C_p, epsilon, kernel, n_restarts : ∝SVM settings; ``C`` is also the linear SVM's.
    n_estimators : trees of the random forest.
    random_state : int, RandomState or None, for k-means, ∝SVM and the forest.

    ``fit(X, y=None, *, naming_score=None)``.

    Fitted attributes: ``scaler_``, ``kmeans_``, ``malignant_cluster_`` (index of the
    k-means cluster named malignant), ``cluster_labels_`` (training cases, 0/1 after
    naming), ``bags_`` and ``bag_proportions_`` (∝SVM only), ``flip_share_`` (∝SVM: share
    of training cases whose ∝SVM label differs from ``cluster_labels_``; NaN otherwise),
    ``model_`` (the inner classifier, None for ``"cluster"``), ``classes_`` = [0, 1].
    """

    _parameter_constraints: dict = {
        "method": [StrOptions(set(METHODS))],
        "naming": [StrOptions(set(NAMINGS))],
        "bags": [StrOptions(set(BAGS))],
        "proportions": [StrOptions(set(PROPORTIONS))],
        "n_subclusters": [Interval(Integral, 3, None, closed="left")],
        "n_init": [Interval(Integral, 1, None, closed="left")],
        "C": [Interval(Real, 0, None, closed="neither")],
        "C_p": [Interval(Real, 0, None, closed="left")],
        "epsilon": [Interval(Real, 0, 1, closed="left")],
        "kernel": [StrOptions({"linear", "rbf"})],
        "n_restarts": [Interval(Integral, 1, None, closed="left")],
        "n_estimators": [Interval(Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        method="psvm",
        naming="label_free",
        bags="clusters",
        proportions="hard",
        n_subclusters=8,
        n_init=10,
        C=1.0,
        C_p=1.0,
        epsilon=0.1,
        kernel="linear",
        n_restarts=10,
        n_estimators=200,
        random_state=None,
    ):
        self.method = method
        self.naming = naming
        self.bags = bags
        self.proportions = proportions
        self.n_subclusters = n_subclusters
        self.n_init = n_init
        self.C = C
        self.C_p = C_p
        self.epsilon = epsilon
        self.kernel = kernel
        self.n_restarts = n_restarts
        self.n_estimators = n_estimators
        self.random_state = random_state

    def _check_features(self, X, reset: bool) -> np.ndarray:
        """validate_data, with non-finite rows named (a case id is one lookup away)."""
        X = validate_data(self, X, dtype=np.float64, ensure_all_finite=False, reset=reset)
        bad = np.flatnonzero(~np.isfinite(X).all(axis=1))
        if bad.size:
            raise ValueError(
                f"features of row(s) {bad[:10].tolist()} contain NaN or infinity; "
                "drop or re-extract those cases"
            )
        return X

    def _naming_score(self, values, n):
        if values is None:
            raise ValueError("naming='label_free' needs `naming_score` in fit")
        values = np.asarray(values, dtype=np.float64)
        if values.shape != (n,) or not np.all(np.isfinite(values)):
            raise ValueError(f"naming_score must be a finite array of shape ({n},)")
        return values

    def _labels(self, y):
        """naming="labels": y as booleans (True = classes_[1], the malignant class)."""
        if y is None:
            raise ValueError("naming='labels' requires y to be passed, but the target y is None")
        check_classification_targets(y)
        self.classes_ = np.unique(y)
        if self.classes_.size > 2:
            raise ValueError("Only binary classification is supported (benign vs malignant)")
        if self.classes_.size < 2:
            raise ValueError("y holds one class only: the clusters cannot be named")
        return y == self.classes_[1]

    def fit(self, X, y=None, *, naming_score=None):
        """Fit on the training fold: X (n, d); ``naming_score`` (n,) for label-free naming
        (y is then ignored), ``y`` (n,) of two classes for ``naming="labels"`` (the larger
        label, 1 for 0/1 labels, is malignant)."""
        self._validate_params()
        if self.naming == "labels" and y is not None:
            X, y = validate_data(self, X, y, dtype=np.float64, ensure_all_finite=False)
            X = self._check_features(X, reset=False)
        else:
            X = self._check_features(X, reset=True)
        n = X.shape[0]
        if n < 2:
            raise ValueError(f"two clusters need at least 2 samples; got {n} sample")
        if self.naming == "labels":
            truth = self._labels(y)
        else:
            score = self._naming_score(naming_score, n)
            self.classes_ = np.array([0, 1])
        rng = check_random_state(self.random_state)
        kmeans_seed, inner_seed = _seed(rng), _seed(rng)

        self.scaler_ = StandardScaler().fit(X)
        Xs = self.scaler_.transform(X)
        if np.unique(Xs, axis=0).shape[0] < 2:
            raise ValueError(_ONE_CLUSTER)
        self.kmeans_ = KMeans(n_clusters=2, n_init=self.n_init, random_state=kmeans_seed).fit(Xs)
        clusters = self.kmeans_.labels_
        if np.any(np.bincount(clusters, minlength=2) == 0):
            raise ValueError(_ONE_CLUSTER)
        if self.naming == "label_free":
            self.malignant_cluster_ = name_clusters_label_free(clusters, score)
        else:
            self.malignant_cluster_ = name_clusters_with_labels(clusters, truth)
        self.cluster_labels_ = (clusters == self.malignant_cluster_).astype(np.int64)
        self.flip_share_ = float("nan")
        self.model_ = self._fit_inner(Xs, clusters, inner_seed)
        return self

    def _bags_and_proportions(self, Xs, clusters, seed):
        """Bag ids and their shares of positives (module docstring)."""
        malignant = self.cluster_labels_
        share = float(malignant.mean())
        if self.bags == "one":
            return np.zeros(Xs.shape[0], dtype=np.intp), np.array([share])
        if self.bags == "subclusters":
            k = min(int(self.n_subclusters), np.unique(Xs, axis=0).shape[0])
            sub = KMeans(n_clusters=k, n_init=self.n_init, random_state=seed).fit(Xs).labels_
            _, bags = np.unique(sub, return_inverse=True)  # renumber: every id used
            sizes = np.bincount(bags)
            return bags, np.bincount(bags, weights=malignant) / sizes
        if self.proportions == "hard":
            return clusters, np.array([float(v == self.malignant_cluster_) for v in (0, 1)])
        if self.proportions == "literal":
            return clusters, np.array([share, share])
        centers = self.kmeans_.cluster_centers_
        return clusters, soft_malignant_share(Xs, centers, clusters, self.malignant_cluster_)

    def _fit_inner(self, Xs, clusters, seed):
        labels = self.cluster_labels_
        if self.method == "cluster":
            return None
        if self.method == "svm":
            return LinearSVC(C=self.C, random_state=seed).fit(Xs, labels)
        if self.method == "rf":
            forest = RandomForestClassifier(n_estimators=self.n_estimators, random_state=seed)
            return forest.fit(Xs, labels)
        self.bags_, self.bag_proportions_ = self._bags_and_proportions(Xs, clusters, seed)
        psvm = ProportionSVM(
            C=self.C,
            C_p=self.C_p,
            kernel=self.kernel,
            epsilon=self.epsilon,
            n_restarts=self.n_restarts,
            random_state=seed,
        )
        psvm.fit(Xs, bags=self.bags_, proportions=self.bag_proportions_)
        self.flip_share_ = float(np.mean(psvm.train_labels_ != labels))
        return psvm

    def decision_function(self, X):
        """Malignancy score: larger means malignant; > 0 predicts malignant.

        ``cluster``: ‖x − μ_benign‖² − ‖x − μ_malignant‖² (standardized space);
        ``svm`` / ``psvm``: the SVM score; ``rf``: P(malignant) − 0.5.
        """
        check_is_fitted(self, "model_")
        X = self._check_features(X, reset=False)
        Xs = self.scaler_.transform(X)
        if self.method == "cluster":
            sq = self.kmeans_.transform(Xs) ** 2
            return sq[:, 1 - self.malignant_cluster_] - sq[:, self.malignant_cluster_]
        if self.method == "rf":
            return self.model_.predict_proba(Xs)[:, 1] - 0.5  # both clusters are non-empty
        return self.model_.decision_function(Xs)

    def predict(self, X):
        """0 = benign / normal, 1 = malignant / IPMN (``classes_[1]`` for other labels)."""
        malignant = self.decision_function(X) > 0
        return self.classes_[malignant.astype(np.int64)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False
        return tags
