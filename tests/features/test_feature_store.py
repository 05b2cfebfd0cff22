import json

import numpy as np
import pytest
from fake_patches import FakePatchStore

from tumorchar.features.store import (
    FeatureStore,
    canonical_json,
    feature_key,
    load_feature_folder,
)


def mean_std(patches):
    """A toy 2-d extractor on slices."""

    def compute(case_ids):
        s = patches.slices(case_ids)
        return np.stack([s.mean(axis=(1, 2)), s.std(axis=(1, 2))], axis=1)

    return compute


class Killed(BaseException):
    """Stands for SIGKILL / Ctrl-C: not an Exception, so nothing catches it."""


def test_computes_then_reuses(tmp_path):
    patches = FakePatchStore()
    store = FeatureStore(tmp_path)
    first = store.get_or_compute("toy", {"a": 1}, patches, mean_std(patches), progress=False)
    assert first.values.shape == (10, 2) and first.values.dtype == np.float32
    assert first.case_ids == tuple(patches.case_ids)
    expected = mean_std(patches)(patches.case_ids)
    np.testing.assert_allclose(first.values, expected, rtol=1e-6)
    patches.loaded.clear()
    second = FeatureStore(tmp_path).get_or_compute(
        "toy", {"a": 1}, patches, mean_std(patches), progress=False
    )
    assert patches.loaded == []  # nothing recomputed
    assert np.array_equal(second.values, first.values)
    assert second.case_ids == first.case_ids


def test_provenance_records_inputs_and_versions(tmp_path):
    patches = FakePatchStore()
    fs = FeatureStore(tmp_path).get_or_compute(
        "toy", {"b": [1, 2], "a": 0.5}, patches, mean_std(patches), progress=False
    )
    prov = fs.provenance
    assert prov["extractor"] == "toy" and prov["settings"] == {"a": 0.5, "b": [1, 2]}
    assert prov["input_hash"] == patches.content_hash
    assert prov["input"] == {"source": "phantom", "is_phantom": True}
    assert {"python", "numpy", "scipy", "tumorchar"} <= set(prov["versions"])
    assert prov["created"].endswith("+00:00")
    folder = tmp_path / "toy" / prov["key"][:16]
    on_disk = json.loads((folder / "provenance.json").read_text())
    assert on_disk["key"] == prov["key"]
    assert not (folder / "partial").exists()


def test_settings_and_input_changes_invalidate(tmp_path):
    patches = FakePatchStore()
    store = FeatureStore(tmp_path)
    store.get_or_compute("toy", {"a": 1}, patches, mean_std(patches), progress=False)
    for settings, data in [({"a": 2}, patches), ({"a": 1}, FakePatchStore(seed=1))]:
        data.loaded.clear()
        result = store.get_or_compute("toy", settings, data, mean_std(data), progress=False)
        assert sorted(data.loaded) == sorted(data.case_ids)  # recomputed
        np.testing.assert_allclose(result.values, mean_std(data)(data.case_ids), rtol=1e-6)
    assert len(list((tmp_path / "toy").iterdir())) == 3  # each version kept under its key


def test_key_is_canonical():
    assert canonical_json({"b": 1, "a": (1, 2)}) == canonical_json({"a": [1, 2], "b": 1})
    key = feature_key("gist", {"x": 1, "y": 2}, "h")
    assert key == feature_key("gist", {"y": 2, "x": 1}, "h")
    assert key != feature_key("gist", {"x": 1, "y": 2}, "h2")
    assert key != feature_key("vgg16", {"x": 1, "y": 2}, "h")


def test_damaged_cache_is_recomputed(tmp_path):
    patches = FakePatchStore()
    store = FeatureStore(tmp_path)
    fs = store.get_or_compute("toy", {}, patches, mean_std(patches), progress=False)
    (tmp_path / "toy" / fs.provenance["key"][:16] / "features.npz").write_bytes(b"garbage")
    patches.loaded.clear()
    again = store.get_or_compute("toy", {}, patches, mean_std(patches), progress=False)
    assert patches.loaded and np.array_equal(again.values, fs.values)


def test_resumes_after_an_interrupted_run(tmp_path):
    patches = FakePatchStore(n_cases=10)
    calls = []

    def dies_on_third_batch(case_ids):
        calls.append(list(case_ids))
        if len(calls) == 3:
            raise Killed
        return mean_std(patches)(case_ids)

    store = FeatureStore(tmp_path)
    with pytest.raises(Killed):
        store.get_or_compute("toy", {}, patches, dies_on_third_batch, batch_size=3, progress=False)
    key = feature_key("toy", {}, patches.content_hash)
    partial = sorted(p.name for p in (tmp_path / "toy" / key[:16] / "partial").iterdir())
    assert partial == ["batch-0000000.npz", "batch-0000003.npz"]
    assert store.load("toy", {}, patches) is None  # an unfinished run is not a result

    calls.clear()
    fs = store.get_or_compute("toy", {}, patches, dies_on_third_batch, batch_size=3, progress=False)
    assert calls == [patches.case_ids[6:9], patches.case_ids[9:]]  # only what was missing
    np.testing.assert_allclose(fs.values, mean_std(patches)(patches.case_ids), rtol=1e-6)


def test_failing_cases_are_listed_and_the_others_go_on(tmp_path):
    patches = FakePatchStore(n_cases=6)

    def compute(case_ids):
        if "case002" in case_ids:
            raise ValueError("case002: empty slice")
        return mean_std(patches)(case_ids)

    fs = FeatureStore(tmp_path).get_or_compute(
        "toy", {}, patches, compute, batch_size=4, progress=False
    )
    assert fs.case_ids == tuple(c for c in patches.case_ids if c != "case002")
    assert fs.values.shape == (5, 2)
    assert fs.provenance["failures"] == {"case002": "ValueError: case002: empty slice"}
    np.testing.assert_allclose(fs.values, mean_std(patches)(list(fs.case_ids)), rtol=1e-6)


def test_multi_output_extractor_saves_all_outputs_from_one_pass(tmp_path):
    patches = FakePatchStore()
    passes = []

    def two_layers(case_ids):
        passes.append(case_ids)
        h = patches.slices(case_ids).reshape(len(case_ids), -1)[:, :6]
        return {"fc": h, "fc_relu": np.maximum(h, 0)}

    store = FeatureStore(tmp_path)
    sets = store.get_or_compute_outputs(
        "net", {}, patches, two_layers, batch_size=5, progress=False
    )
    assert len(passes) == 2 and set(sets) == {"fc", "fc_relu"}
    assert sets["fc_relu"].values.shape == (10, 6) and sets["fc"].output == "fc"
    np.testing.assert_array_equal(sets["fc_relu"].values, np.maximum(sets["fc"].values, 0))
    assert (sets["fc"].values < 0).any()
    with pytest.raises(TypeError, match="get_or_compute_outputs"):
        store.get_or_compute("net", {}, patches, two_layers, progress=False)
    folder = tmp_path / "net" / sets["fc"].provenance["key"][:16]
    reloaded = load_feature_folder(folder)
    np.testing.assert_array_equal(reloaded["fc"].values, sets["fc"].values)


def test_bad_compute_output_is_reported(tmp_path):
    patches = FakePatchStore(n_cases=3)
    with pytest.raises(RuntimeError, match=r"every case \(case000: ValueError: compute returned"):
        FeatureStore(tmp_path).get_or_compute(
            "toy", {}, patches, lambda ids: np.zeros((len(ids) + 1, 2)), progress=False
        )


def test_empty_patch_store_is_refused(tmp_path):
    with pytest.raises(ValueError, match="no cases"):
        FeatureStore(tmp_path).get_or_compute(
            "toy", {}, FakePatchStore(n_cases=0), lambda ids: np.zeros((len(ids), 2))
        )
