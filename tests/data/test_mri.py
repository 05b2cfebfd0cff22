import shutil

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from pydicom.data import get_testdata_file
from typer.testing import CliRunner

from tumorchar.cli import app
from tumorchar.data.io import Volume, read_image
from tumorchar.data.mri import (
    MRISettings,
    anisotropic_diffusion,
    build_mri_store,
    n4_correct,
    stable_time_step,
)
from tumorchar.data.patches import PatchStore
from tumorchar.data.synthetic_mri import synthesize_case, write_synthetic_mri

SHAPE = (8, 64, 64)
FAST = MRISettings(n4_iterations=(20, 20), roi_size=32)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mri")
    return write_synthetic_mri(folder, n_cases=3, seed=0, ipmn_fraction=0.67, shape=SHAPE)


def test_generator_writes_cases_labels_and_rois(synthetic):
    labels = pd.read_csv(synthetic / "labels.csv")
    assert labels["label"].tolist() == ["normal", "ipmn", "ipmn"]
    rois = pd.read_csv(synthetic / "rois.csv")
    assert list(rois.columns) == ["case_id", "z0", "z1", "y0", "y1", "x0", "x1"]
    volume = read_image(synthetic / "SYNMRI-0001.nii.gz")
    assert volume.shape == SHAPE and volume.array.min() >= 0
    assert "SYNTHETIC" in (synthetic / "synthetic.json").read_text()


def test_generator_is_deterministic_and_ipmn_has_bright_cysts():
    a = synthesize_case("SYNMRI-0002", "ipmn", seed=1, shape=SHAPE)
    b = synthesize_case("SYNMRI-0002", "ipmn", seed=1, shape=SHAPE)
    normal = synthesize_case("SYNMRI-0002", "normal", seed=1, shape=SHAPE)
    np.testing.assert_array_equal(a.volume.array, b.volume.array)
    assert (
        np.percentile(a.volume.array[a.pancreas], 90)
        > np.percentile(normal.volume.array[normal.pancreas], 90) + 200
    )


def test_n4_removes_a_smooth_bias_field():
    z, y, x = np.meshgrid(*(np.linspace(-1, 1, n) for n in (8, 48, 48)), indexing="ij")
    body = (y**2 + x**2) < 0.8
    truth = np.where(body, 300.0, 5.0)
    biased = truth * np.exp(0.35 * x + 0.2 * y)
    rng = np.random.default_rng(0)
    image = Volume((biased + rng.normal(0, 2, biased.shape)).astype(np.float32), (4.0, 1, 1))
    corrected = sitk.GetArrayFromImage(n4_correct(image.to_sitk(), shrink=2))
    cv_before = biased[body].std() / biased[body].mean()
    cv_after = corrected[body].std() / corrected[body].mean()
    assert cv_after < 0.5 * cv_before


def test_diffusion_time_step_is_kept_stable():
    assert stable_time_step((0.5, 0.5, 5.0)) == pytest.approx(0.5 / 16)
    image = sitk.GetImageFromArray(np.random.default_rng(0).normal(size=(4, 16, 16)))
    image.SetSpacing((0.5, 0.5, 5.0))
    smoothed = anisotropic_diffusion(image, time_step=1.0)  # would diverge unclamped
    out = sitk.GetArrayFromImage(smoothed)
    assert smoothed.GetPixelID() == sitk.sitkFloat32
    assert np.isfinite(out).all() and out.std() < 1.0


def test_mri_store_holds_roi_slices(synthetic, tmp_path):
    report = build_mri_store(
        synthetic,
        synthetic / "rois.csv",
        synthetic / "labels.csv",
        tmp_path / "s",
        FAST,
        show_progress=False,
    )
    assert not report.failures
    store = PatchStore(tmp_path / "s")
    assert store.source == "mri" and store.is_phantom and "SYNTHETIC" in store.note
    index = store.index.set_index("case_id")
    assert index["label"].tolist() == ["normal", "ipmn", "ipmn"]
    assert index["malignancy"].isna().all()
    rois = pd.read_csv(synthetic / "rois.csv").set_index("case_id")
    for case_id in store.case_ids:
        patch = store.load(case_id)
        n_slices = rois.loc[case_id, "z1"] - rois.loc[case_id, "z0"]
        assert patch.volume.shape == (n_slices, 32, 32)
        np.testing.assert_array_equal(patch.slice2d, patch.volume[n_slices // 2])
        assert patch.mask.any(axis=(1, 2)).all()  # every stored slice holds the ROI
        assert 0.3 < patch.mask.mean() < 0.7  # the box inside a square with 10 % margins
    assert store.slices().shape == (3, 32, 32)


def _custom_inputs(tmp_path, synthetic, rois):
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(synthetic / "SYNMRI-0001.nii.gz", images / "A.nii.gz")
    shutil.copy(synthetic / "SYNMRI-0002.nii.gz", images / "B.nii.gz")
    pd.DataFrame(rois).to_csv(tmp_path / "rois.csv", index=False)
    pd.DataFrame({"case_id": ["A", "B"], "label": ["normal", "ipmn"]}).to_csv(
        tmp_path / "labels.csv", index=False
    )
    return images, tmp_path / "rois.csv", tmp_path / "labels.csv"


def _mask_file(path, array, spacing):
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.SetSpacing(spacing[::-1])
    sitk.WriteImage(image, str(path))


def test_mask_rois_and_bad_masks(synthetic, tmp_path):
    reference = read_image(synthetic / "SYNMRI-0001.nii.gz")
    good = np.zeros(SHAPE, bool)
    good[3:5, 20:40, 20:40] = True
    _mask_file(tmp_path / "a_roi.nii.gz", good, reference.spacing)
    _mask_file(tmp_path / "b_roi.nii.gz", good, (1.0, 1.0, 1.0))  # wrong spacing
    images, rois, labels = _custom_inputs(
        tmp_path, synthetic, {"case_id": ["A", "B"], "mask": ["a_roi.nii.gz", "b_roi.nii.gz"]}
    )
    report = build_mri_store(images, rois, labels, tmp_path / "s", FAST, show_progress=False)
    assert report.written == ["A"]
    assert "case B: ROI mask geometry does not match its image" in report.failures["B"]
    store = PatchStore(tmp_path / "s", allow_incomplete=True)
    assert store.load("A").volume.shape == (2, 32, 32)
    assert not store.is_phantom  # these images do not come with the generator's marker


def test_empty_roi_and_bad_label_fail_by_name(synthetic, tmp_path):
    empty = np.zeros(SHAPE, bool)
    reference = read_image(synthetic / "SYNMRI-0001.nii.gz")
    _mask_file(tmp_path / "empty.nii.gz", empty, reference.spacing)
    images, rois, labels = _custom_inputs(
        tmp_path, synthetic, {"case_id": ["A"], "mask": ["empty.nii.gz"]}
    )
    pd.DataFrame({"case_id": ["A", "B"], "label": ["normal", "cancer"]}).to_csv(labels, index=False)
    report = build_mri_store(images, rois, labels, tmp_path / "s", FAST, show_progress=False)
    assert report.failures["A"] == "case A: empty ROI mask"
    assert "case B: label 'cancer'" in report.failures["B"]


def test_box_outside_image_fails(synthetic, tmp_path):
    images, rois, labels = _custom_inputs(
        tmp_path,
        synthetic,
        {"case_id": ["A"], "z0": [0], "z1": [99], "y0": [0], "y1": [5], "x0": [0], "x1": [5]},
    )
    report = build_mri_store(images, rois, labels, tmp_path / "s", FAST, show_progress=False)
    assert "case A: ROI box" in report.failures["A"]
    assert "case B: no ROI row" in report.failures["B"]


def test_dicom_mr_case(tmp_path):
    series = tmp_path / "images" / "MR1"
    series.mkdir(parents=True)
    shutil.copy(get_testdata_file("MR_small.dcm"), series / "1.dcm")
    pd.DataFrame(
        {"case_id": ["MR1"], "z0": [0], "z1": [1], "y0": [20], "y1": [40], "x0": [20], "x1": [44]}
    ).to_csv(tmp_path / "rois.csv", index=False)
    pd.DataFrame({"case_id": ["MR1"], "label": ["normal"]}).to_csv(
        tmp_path / "labels.csv", index=False
    )
    report = build_mri_store(
        tmp_path / "images",
        tmp_path / "rois.csv",
        tmp_path / "labels.csv",
        tmp_path / "s",
        FAST,
        show_progress=False,
    )
    assert report.written == ["MR1"], report.failures
    assert PatchStore(tmp_path / "s").load("MR1").volume.shape == (1, 32, 32)


def test_cli_synthetic_then_mri(tmp_path):
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "patches",
            "synthetic-mri",
            "--out",
            str(tmp_path / "d"),
            "--n-cases",
            "2",
            "--seed",
            "3",
            "--matrix",
            "64",
            "--slices",
            "8",
        ],
    )
    assert result.exit_code == 0 and "SYNTHETIC" in result.output
    labels = pd.read_csv(tmp_path / "d" / "labels.csv")
    assert sorted(labels["label"]) == ["ipmn", "normal"]
