"""Batch characterization of a patch store with a bundle (`tumorchar.bundle.batch`)."""

from __future__ import annotations

import numpy as np
import pytest

from tumorchar.bundle.batch import _region, predict_store
from tumorchar.bundle.characterizer import load_model
from tumorchar.bundle.format import BundleError
from tumorchar.data.patches import CaseArrays, PatchStore, PatchStoreWriter


def _as_2d_store(store: PatchStore, folder, spacing=None) -> PatchStore:
    """The central slices of a 3D store as a 2D store (same geometry)."""
    writer = PatchStoreWriter(
        folder, "lidc-maxslice", {"geometry": store.settings["geometry"]}, kind="2d"
    )
    for case_id in store.case_ids:
        patch = store.load(case_id)
        row = dict(patch.info)
        if spacing is not None:
            row["spacing_mm"] = spacing
        writer.add(case_id, CaseArrays.image2d(patch.slice2d, patch.mask2d, row))
    writer.flush(complete=True)
    return PatchStore(folder)


def test_every_case_of_a_store_is_characterized(unsupervised_bundle, phantom_store):
    model, store = load_model(unsupervised_bundle), PatchStore(phantom_store)
    result = predict_store(model, store)
    assert not result.failures
    assert [c["case_id"] for c in result.cases] == store.case_ids
    index = store.index.set_index("case_id")
    for case in result.cases:
        assert case["patient_id"] == index.loc[case["case_id"], "patient_id"]
        assert case["label"] == index.loc[case["case_id"], "label"]
        assert case["class"] in ("benign", "malignant")
        assert 0.0 <= case["probability"] <= 1.0
    # the same answer as the bundle gives for the region one case at a time
    single = model.predict_patch(_region(store.load(store.case_ids[3]), {}), store.case_ids[3])
    assert result.cases[3]["probability"] == pytest.approx(single.probability)
    summary = result.summary
    assert summary["labelled"] == len(store.case_ids)
    assert 0.0 <= summary["auc"] <= 1.0
    payload = result.to_dict(model, store)
    assert payload["store"]["is_phantom"] and payload["model"]["bundle_sha256"]


def test_a_2d_store_is_characterized_like_the_central_slices(
    unsupervised_bundle, phantom_store, tmp_path
):
    model, store = load_model(unsupervised_bundle), PatchStore(phantom_store)
    flat = _as_2d_store(store, tmp_path / "flat")
    from_3d = predict_store(model, store).cases
    from_2d = predict_store(model, flat).cases
    np.testing.assert_allclose(
        [c["probability"] for c in from_2d], [c["probability"] for c in from_3d]
    )


def test_volume_features_or_another_spacing_are_refused(
    mtl_bundle, unsupervised_bundle, phantom_store, tmp_path
):
    store = PatchStore(phantom_store)
    with pytest.raises(BundleError, match="need volumes"):
        predict_store(load_model(mtl_bundle), _as_2d_store(store, tmp_path / "a"))
    other = _as_2d_store(store, tmp_path / "b", spacing=0.7)
    with pytest.raises(BundleError, match="trained on cases at"):
        predict_store(load_model(unsupervised_bundle), other)
