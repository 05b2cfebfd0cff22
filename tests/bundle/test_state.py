import json

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.linear_model import LogisticRegression, MultiTaskLasso
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from tumorchar.bundle.format import BundleError
from tumorchar.bundle.state import decode, estimators_from_state, estimators_to_state


def _round_trip(estimators, tmp_path):
    tree, arrays = estimators_to_state(estimators)
    np.savez(tmp_path / "a.npz", **arrays)
    text = json.dumps(tree, allow_nan=False)
    with np.load(tmp_path / "a.npz", allow_pickle=False) as loaded:
        return estimators_from_state(json.loads(text), {k: loaded[k] for k in loaded.files})


def test_fitted_estimators_predict_identically_after_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 6))
    labels = np.where(X[:, 0] > 0, "malignant", "benign")
    fitted = {
        "classifier": make_pipeline(StandardScaler(), LogisticRegression()).fit(X, labels),
        "clusters": KMeans(n_clusters=2, n_init=3, random_state=0).fit(X),
        "regression": MultiTaskLasso(alpha=0.05).fit(X, X[:, :3] @ rng.normal(size=(3, 2))),
        "scale": np.float64(2.5),
        "limits": (1.0, float("inf")),
    }
    restored = _round_trip(fitted, tmp_path)
    np.testing.assert_array_equal(
        restored["classifier"].predict_proba(X), fitted["classifier"].predict_proba(X)
    )
    np.testing.assert_array_equal(
        restored["classifier"].predict(X), fitted["classifier"].predict(X)
    )
    np.testing.assert_array_equal(restored["clusters"].predict(X), fitted["clusters"].predict(X))
    np.testing.assert_array_equal(
        restored["regression"].predict(X), fitted["regression"].predict(X)
    )
    assert restored["scale"] == 2.5 and isinstance(restored["scale"], np.float64)
    assert restored["limits"] == (1.0, float("inf"))


def test_unsupported_values_are_refused_at_save_time():
    with pytest.raises(BundleError, match="cannot store bad"):
        estimators_to_state({"bad": np.random.default_rng(0)})
    with pytest.raises(BundleError, match="cannot store obj"):
        estimators_to_state({"obj": np.array([{}, 1], dtype=object)})


def test_classes_outside_the_allowlist_are_not_imported():
    with pytest.raises(BundleError, match="refusing to load class 'os:system'"):
        decode({"__estimator__": "os:system", "attributes": {}}, {})
    with pytest.raises(BundleError, match="not an estimator"):
        decode({"__estimator__": "sklearn.utils:check_array", "attributes": {}}, {})
