"""Unsupervised benign / malignant classification (paper section IV, Fig. 3, Table III).

Fitted on the training fold only: standardize, k-means with k = 2 (Eq. 7), name the two
clusters benign (0) / malignant (1), then one of

- ``method="psvm"`` (proposed): the clusters are the bags of a proportion-SVM whose label
  proportions come from the clustering (Eq. 9), with the ε of Eq. 8 leaving room for
  outliers;
- ``method="cluster"``: the clustering alone, a test case takes its nearest centroid's name;
- ``method="svm"``: a linear SVM trained on the named cluster assignments;
- ``method="rf"``: a random forest trained on the named cluster assignments.

Cluster naming:

- ``naming="label_free"`` (default): the cluster whose training cases have the larger mean
  ``naming_score`` is malignant. The caller supplies the score; for lung nodules the size ×
  density of the patch (e.g. equivalent diameter × mean intensity inside the mask: larger,
  denser nodules are more often malignant); for pancreas MRI the mean T2 intensity of the
  ROI (IPMN cysts hold fluid and are T2-hyperintense). No ground truth is read.
- ``naming="labels"``: THE PAPER'S PROTOCOL, which looks at the ground truth of the
  training fold: the cluster holding the larger share of malignant training cases is
  malignant. It is kept so both can be reported; it is not label-free.

Eq. 9 gives each cluster the share of its members assigned to it; read per cluster, the
malignant cluster's proportion of positives is 1 and the benign one's 0 (``proportions=
"hard"``, the default); ε (Eq. 8) then lets up to that share of each cluster change
side: the paper's allowance for outliers (section IV-C). With ε = 0 ∝SVM reduces to an
L2-SVM on the cluster assignments. ``proportions="soft"`` instead takes the mean posterior
of the malignant cluster inside each cluster, from an isotropic Gaussian around each
centroid with the pooled within-cluster variance, so that cases near the boundary make
the bags' proportions less than pure.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.cluster import KMeans
from sklearn.ensemble import RandomForestClassifier
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC
from sklearn.utils.validation import check_is_fitted

from tumorchar.models.psvm import ProportionSVM

METHODS = ("psvm", "cluster", "svm", "rf")
NAMINGS = ("label_free", "labels")
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


class UnsupervisedClassifier(ClassifierMixin, BaseEstimator):
    """k-means (k = 2) → cluster naming → ∝SVM or a Table III baseline; labels 0/1.

    Parameters
    ----------
    method : ``"psvm"`` (proposed), ``"cluster"``, ``"svm"`` or ``"rf"`` (module docstring).
    naming : ``"label_free"`` (needs ``naming_score`` in ``fit``) or ``"labels"`` (the
        paper's protocol, needs ``y`` in ``fit``).
    proportions : ``"hard"`` or ``"soft"`` bag proportions for ∝SVM (module docstring).
    n_init : k-means initializations.
    C, C_p, epsilon, kernel, n_restarts : ∝SVM settings; ``C`` is also the linear SVM's.
    n_estimators : trees of the random forest.
    random_state : seed for k-means, ∝SVM and the forest.

    Fitted attributes: ``scaler_``, ``kmeans_``, ``malignant_cluster_`` (index of the
    k-means cluster named malignant), ``cluster_labels_`` (training cases, 0/1 after
    naming), ``bag_proportions_`` (∝SVM only), ``model_`` (the inner classifier, None for
    ``"cluster"``), ``classes_`` = [0, 1].
    """

    def __init__(
        self,
        method="psvm",
        naming="label_free",
        proportions="hard",
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
        self.proportions = proportions
        self.n_init = n_init
        self.C = C
        self.C_p = C_p
        self.epsilon = epsilon
        self.kernel = kernel
        self.n_restarts = n_restarts
        self.n_estimators = n_estimators
        self.random_state = random_state

    def _check_settings(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}; got {self.method!r}")
        if self.naming not in NAMINGS:
            raise ValueError(f"naming must be one of {NAMINGS}; got {self.naming!r}")
        if self.proportions not in ("hard", "soft"):
            raise ValueError(f"proportions must be 'hard' or 'soft'; got {self.proportions!r}")

    @staticmethod
    def _check_features(X, min_rows: int = 1) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[0] < min_rows or X.shape[1] < 1:
            raise ValueError(
                f"X must be a 2-d array with at least {min_rows} row(s); got shape {X.shape}"
            )
        bad = np.flatnonzero(~np.isfinite(X).all(axis=1))
        if bad.size:
            raise ValueError(
                f"features of row(s) {bad[:10].tolist()} contain NaN or infinity; "
                "drop or re-extract those cases"
            )
        return X

    def _naming_vector(self, name, values, n):
        if values is None:
            needed = "naming_score" if self.naming == "label_free" else "y"
            raise ValueError(f"naming={self.naming!r} needs `{needed}` in fit")
        values = np.asarray(values, dtype=np.float64)
        if values.shape != (n,) or not np.all(np.isfinite(values)):
            raise ValueError(f"{name} must be a finite array of shape ({n},)")
        return values

    def fit(self, X, naming_score=None, y=None):
        """Fit on the training fold: X (n, d); ``naming_score`` (n,) or ``y`` (n,) in {0, 1}."""
        self._check_settings()
        X = self._check_features(X, min_rows=2)
        n = X.shape[0]
        seed = None if self.random_state is None else int(self.random_state)

        self.scaler_ = StandardScaler().fit(X)
        Xs = self.scaler_.transform(X)
        if np.unique(Xs, axis=0).shape[0] < 2:
            raise ValueError(_ONE_CLUSTER)
        self.kmeans_ = KMeans(n_clusters=2, n_init=self.n_init, random_state=seed).fit(Xs)
        clusters = self.kmeans_.labels_
        if np.any(np.bincount(clusters, minlength=2) == 0):
            raise ValueError(_ONE_CLUSTER)

        if self.naming == "label_free":
            score = self._naming_vector("naming_score", naming_score, n)
            self.malignant_cluster_ = name_clusters_label_free(clusters, score)
        else:
            truth = self._naming_vector("y", y, n)
            if not np.isin(truth, (0, 1)).all():
                raise ValueError("y must hold 0 (benign / normal) and 1 (malignant / IPMN)")
            self.malignant_cluster_ = name_clusters_with_labels(clusters, truth)
        self.cluster_labels_ = (clusters == self.malignant_cluster_).astype(np.int64)
        self.classes_ = np.array([0, 1])
        self.n_features_in_ = X.shape[1]
        self.model_ = self._fit_inner(Xs, clusters, seed)
        return self

    def _fit_inner(self, Xs, clusters, seed):
        labels = self.cluster_labels_
        if self.method == "cluster":
            return None
        if self.method == "svm":
            return LinearSVC(C=self.C, random_state=seed).fit(Xs, labels)
        if self.method == "rf":
            forest = RandomForestClassifier(n_estimators=self.n_estimators, random_state=seed)
            return forest.fit(Xs, labels)
        if self.proportions == "hard":
            shares = np.array([float(v == self.malignant_cluster_) for v in (0, 1)])
        else:
            centers = self.kmeans_.cluster_centers_
            shares = soft_malignant_share(Xs, centers, clusters, self.malignant_cluster_)
        self.bag_proportions_ = shares
        psvm = ProportionSVM(
            C=self.C,
            C_p=self.C_p,
            kernel=self.kernel,
            epsilon=self.epsilon,
            n_restarts=self.n_restarts,
            random_state=seed,
        )
        return psvm.fit(Xs, clusters, shares)

    def decision_function(self, X):
        """Malignancy score: larger means malignant; > 0 predicts malignant.

        ``cluster``: ‖x − μ_benign‖² − ‖x − μ_malignant‖² (standardized space);
        ``svm`` / ``psvm``: the SVM score; ``rf``: P(malignant) − 0.5.
        """
        check_is_fitted(self, "model_")
        Xs = self.scaler_.transform(self._check_features(X))
        if self.method == "cluster":
            sq = self.kmeans_.transform(Xs) ** 2
            return sq[:, 1 - self.malignant_cluster_] - sq[:, self.malignant_cluster_]
        if self.method == "rf":
            return self.model_.predict_proba(Xs)[:, 1] - 0.5  # both clusters are non-empty
        return self.model_.decision_function(Xs)

    def predict(self, X):
        """0 = benign / normal, 1 = malignant / IPMN."""
        return (self.decision_function(X) > 0).astype(np.int64)
