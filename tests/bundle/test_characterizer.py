"""Train on a small phantom store, save, load, predict: the promises of a model bundle."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.data import get_testdata_file

import tumorchar
from tumorchar.bundle.format import BundleError
from tumorchar.bundle.scan import ScanError
from tumorchar.features import i3d
from tumorchar.vocab import TASKS

pytestmark = pytest.mark.slow  # trains two small bundles (~30 s of CPU) once per session


@pytest.fixture(scope="module", params=["mtl", "unsupervised"])
def bundle(request):
    return request.getfixturevalue(f"{request.param}_bundle")


def test_manifest_records_training(mtl_bundle, unsupervised_bundle, phantom_store):
    from tumorchar.data.patches import PatchStore

    store = PatchStore(phantom_store)
    mtl = tumorchar.load_model(mtl_bundle)
    assert (mtl.kind, mtl.modality) == ("mtl", "ct")
    assert mtl.tasks[0] == "malignancy" and len(mtl.tasks) == 7
    assert mtl.score_range["calcification"] == (1.0, 6.0)
    manifest = mtl.manifest
    assert manifest["training_data"]["patch_store_hash"] == store.content_hash
    assert manifest["training_data"]["is_phantom"] is True
    assert manifest["pipeline"]["region"] == {
        "kind": "ct-cube",
        "spacing_mm": 1.0,
        "size_mm": 24.0,
        "fill_value": -1000.0,
    }
    assert set(manifest["cv"]["metrics"]["tasks"]) == set(mtl.tasks)
    network = manifest["settings"]["network"]  # the network and its weights, by content
    assert network["name"] == "I3D" and network["weights"] == "kinetics400"
    assert network["weights_file_sha256"] == i3d.load_i3d().weights_sha256
    assert manifest["pipeline"]["features"]["extractor"] == "i3d"
    # the shipped model is the recipe E1's proposed row evaluates, and the manifest says so
    recipe = manifest["settings"]["model_recipe"]
    assert recipe["recipe"] == "graph-sparse-mtl-cv" and recipe["uses_psi"] is True
    assert recipe["params"] == {}  # ρ chosen by inner CV grouped by patient, as in E1
    mtl_settings = manifest["settings"]["mtl"]
    assert mtl_settings["rho_chosen_by"] == "inner CV by patient"
    assert mtl_settings["rho1"] >= 0 and mtl_settings["rho2"] > 0
    assert mtl.tasks == list(TASKS)
    assert set(manifest["files"]) == {
        "manifest.json",
        "arrays.npz",
        "estimators.json",
        "network.safetensors",
    } - {"manifest.json"}
    unsupervised = tumorchar.load_model(unsupervised_bundle)
    assert unsupervised.kind == "unsupervised" and unsupervised.tasks == []
    assert 0.0 <= unsupervised.manifest["cv"]["metrics"]["classification"]["accuracy"] <= 1.0


def test_prediction_fields_and_ranges(mtl_bundle, scan_volume):
    model = tumorchar.load_model(mtl_bundle)
    volume, center = scan_volume()
    result = model.predict(volume, at=center)
    assert result.label in ("benign", "malignant")
    assert 0.0 <= result.probability <= 1.0
    assert 1.0 <= result.malignancy <= 5.0
    assert set(result.attributes) == set(model.tasks) - {"malignancy"}
    for name, value in result.attributes.items():
        low, high = model.score_range[name]
        assert low <= value <= high
    np.testing.assert_allclose(result.region["center_mm"], center)
    assert result.provenance["training_data"]["n_cases"] == 24
    json.dumps(result.to_dict(), allow_nan=False)


def test_large_dense_ball_scores_above_small_faint_one(bundle, scan_volume):
    model = tumorchar.load_model(bundle)
    big, big_center = scan_volume(radius_mm=7.3, density_hu=30.0)
    small, small_center = scan_volume(radius_mm=3.6, density_hu=-500.0)
    high = model.predict(big, at=big_center)
    low = model.predict(small, at=small_center)
    assert high.probability > low.probability
    assert (high.label, low.label) in {("malignant", "benign")}
    if model.kind == "mtl":
        assert high.malignancy > low.malignancy


def test_point_in_voxels_and_mask_locate_the_same_region(mtl_bundle, scan_volume):
    model = tumorchar.load_model(mtl_bundle)
    volume, center = scan_volume()
    in_mm = model.predict(volume, at=center)
    in_voxels = model.predict(volume, at=(47.0, 41.0, 14.0), units="voxel")
    assert in_voxels.to_dict() == in_mm.to_dict()
    mask = np.zeros(volume.array.shape, bool)
    mask[13:16, 38:45, 44:51] = True  # a box centred on voxel (z, y, x) = (14, 41, 47)
    from_mask = model.predict(volume, mask=mask)
    assert from_mask.to_dict() == in_mm.to_dict()


def _outputs(result):
    return [result.probability, result.malignancy or 0.0, *result.attributes.values()]


def test_files_give_the_same_prediction_as_memory(bundle, tmp_path, scan_volume):
    model = tumorchar.load_model(bundle)
    volume, center = scan_volume()
    expected = model.predict(volume, at=center)
    for name in ("ball.nii.gz", "ball.nrrd"):
        sitk.WriteImage(volume.to_sitk(), str(tmp_path / name))
        got = model.predict(tmp_path / name, at=center)
        assert (got.case_id, got.label) == ("ball", expected.label)
        # NIfTI stores the geometry in float32: equal up to that rounding
        np.testing.assert_allclose(_outputs(got), _outputs(expected), rtol=1e-4)


def test_fresh_process_loads_and_predicts_identically(bundle, tmp_path, scan_volume):
    volume, center = scan_volume()
    path = tmp_path / "ball.nii.gz"
    sitk.WriteImage(volume.to_sitk(), str(path))
    here = tumorchar.load_model(bundle).predict(path, at=center).to_dict()
    script = (
        "import json, sys, tumorchar\n"
        "model = tumorchar.load_model(sys.argv[1])\n"
        "at = tuple(float(v) for v in sys.argv[3].split(','))\n"
        "print(json.dumps(model.predict(sys.argv[2], at=at).to_dict()))\n"
    )
    argv = [sys.executable, "-c", script, str(bundle), str(path), ",".join(map(repr, center))]
    env = os.environ | {"PYTHONPATH": str(Path(tumorchar.__file__).parents[1])}
    done = subprocess.run(argv, capture_output=True, text=True, check=True, env=env)
    assert json.loads(done.stdout) == json.loads(json.dumps(here))


def test_real_ct_dicom_file(mtl_bundle):
    model = tumorchar.load_model(mtl_bundle)
    path = get_testdata_file("CT_small.dcm")
    result = model.predict(path, at=(64, 64, 0), units="voxel")
    assert result.case_id == "CT_small"
    assert result.label in ("benign", "malignant") and 1.0 <= result.malignancy <= 5.0
    # one 5 mm slice inside a 24 mm cube: most of the cube lies outside the scan
    assert 0.5 < result.region["padded_fraction"] < 1.0


def test_point_outside_the_scan_is_refused(mtl_bundle, scan_volume):
    volume, _ = scan_volume()
    with pytest.raises(ScanError, match="case ball: point .* is outside the scan"):
        tumorchar.load_model(mtl_bundle).predict(volume, at=(500.0, 0.0, 0.0), case_id="ball")
    with pytest.raises(ScanError, match="exactly one of a point or a mask"):
        tumorchar.load_model(mtl_bundle).predict(volume)


def test_modality_mismatch_is_refused(mtl_bundle, tmp_path):
    model = tumorchar.load_model(mtl_bundle)
    with pytest.raises(ScanError, match="trained on CT but its header says MRI"):
        model.predict(get_testdata_file("MR_small.dcm"), at=(32, 32, 0), units="voxel")
    mri_like = sitk.GetImageFromArray(
        np.random.default_rng(0).uniform(0, 800, (10, 32, 32)).astype(np.float32)
    )
    sitk.WriteImage(mri_like, str(tmp_path / "t2.nii.gz"))
    with pytest.raises(ScanError, match="its intensities suggest MRI"):
        model.predict(tmp_path / "t2.nii.gz", at=(16, 16, 5), units="voxel")


def test_altered_or_incomplete_bundle_is_refused(mtl_bundle, tmp_path):
    import shutil

    altered = shutil.copytree(mtl_bundle, tmp_path / "altered")
    data = bytearray((altered / "network.safetensors").read_bytes())
    data[len(data) // 2] ^= 0x01
    (altered / "network.safetensors").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="network.safetensors: checksum differs"):
        tumorchar.load_model(altered)
    missing = shutil.copytree(mtl_bundle, tmp_path / "missing")
    (missing / "arrays.npz").unlink()
    with pytest.raises(BundleError, match="arrays.npz: missing"):
        tumorchar.load_model(missing)


def test_dicom_without_spacing_is_refused(mtl_bundle, tmp_path):
    header = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    del header.PixelSpacing
    header.save_as(tmp_path / "nospacing.dcm")
    with pytest.raises(ScanError, match="no PixelSpacing"):
        tumorchar.load_model(mtl_bundle).predict(
            tmp_path / "nospacing.dcm", at=(0, 0, 0), units="voxel"
        )


def test_region_of_a_scan_is_the_training_patch(mtl_bundle, phantom_store):
    """A store patch placed inside a larger scan is cut out again exactly, and predicted as
    the stored patch itself would be: prediction crops as training did."""
    from tumorchar.bundle.region import RegionPatch
    from tumorchar.bundle.scan import as_scan
    from tumorchar.data.io import Volume
    from tumorchar.data.patches import PatchStore

    model = tumorchar.load_model(mtl_bundle)
    patch = PatchStore(phantom_store).load("case005")
    n = patch.volume.shape[0]  # 24 voxels of 1 mm
    array = np.full((n + 16, n + 20, n + 12), -850.0, np.float32)
    array[8 : 8 + n, 5 : 5 + n, 3 : 3 + n] = patch.volume
    scan = Volume(array=array, spacing=(1.0, 1.0, 1.0), origin=(-12.0, 30.0, 7.0))
    center_xyz = (-12.0 + 3 + (n - 1) / 2, 30.0 + 5 + (n - 1) / 2, 7.0 + 8 + (n - 1) / 2)
    region = model.region(as_scan(scan), at=center_xyz)
    np.testing.assert_allclose(region.volume, patch.volume, atol=1e-3)
    stored = RegionPatch(patch.volume, patch.slice2d, center_xyz, 0.0)
    direct = model.predict_patch(stored, "case005")
    from_scan = model.predict(scan, at=center_xyz, case_id="case005")
    np.testing.assert_allclose(_outputs(from_scan), _outputs(direct), rtol=1e-5)
