"""`tumorchar predict` on a synthetic DICOM series writes a valid SR, SEG, heatmap and case
view (one case, and per case in a batch)."""

from __future__ import annotations

import csv

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from output_builders import IDENTITY
from pydicom.sr.codedict import codes
from typer.testing import CliRunner

from tumorchar.bundle.outputs.algorithm import PHANTOM_WARNING
from tumorchar.bundle.outputs.sr import concept
from tumorchar.cli import app

pytestmark = pytest.mark.slow  # trains the small bundles of tests/bundle/conftest.py
runner = CliRunner()


def _at(center) -> str:
    return ",".join(f"{v:.3f}" for v in center)


def _no_identity(path) -> None:
    data = path.read_bytes()
    assert not [k for k, v in IDENTITY.items() if v.encode() in data], path.name


def test_predict_writes_sr_seg_heatmap_and_case_view(mtl_bundle, dicom_series, tmp_path):
    folder, uids, _, _, center = dicom_series
    out = {name: tmp_path / name for name in ("sr.dcm", "seg.dcm", "heat.nii.gz", "case.html")}
    args = ["predict", "--model", str(mtl_bundle), "--scan", str(folder), "--at", _at(center)]
    args += ["--dicom-sr", str(out["sr.dcm"]), "--dicom-seg", str(out["seg.dcm"])]
    args += ["--heatmap", str(out["heat.nii.gz"]), "--html", str(out["case.html"])]
    args += ["--json", str(tmp_path / "result.json")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    for path in out.values():
        assert path.is_file()
        _no_identity(path)
    sr = hd.sr.srread(out["sr.dcm"])
    assert sr.StudyInstanceUID == uids["study"]
    (group,) = sr.content.get_volumetric_roi_measurement_groups()
    seg = pydicom.dcmread(out["seg.dcm"])
    reference = group.referenced_segment[0].ReferencedSOPSequence[0]
    assert reference.ReferencedSOPInstanceUID == seg.SOPInstanceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == uids["series"]
    assert group.get_measurements(name=concept("malignancy"))
    (evaluation,) = group.get_qualitative_evaluations(name=codes.SCT.Classification)
    assert evaluation.value in (codes.SCT.Benign, codes.SCT.Malignant)
    heat = sitk.GetArrayFromImage(sitk.ReadImage(str(out["heat.nii.gz"])))
    assert heat.shape == (16, 32, 32) and np.isclose(heat.max(), 1.0)
    page = out["case.html"].read_text()
    assert PHANTOM_WARNING in page and "grad-cam" in page


def test_batch_writes_outputs_per_case_and_one_page(mtl_bundle, dicom_series, tmp_path):
    folder, _, _, _, center = dicom_series
    table = tmp_path / "cases.csv"
    with open(table, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["case_id", "scan", "x", "y", "z"])
        writer.writerow(["near", str(folder), *center])
        writer.writerow(["offset", str(folder), center[0] + 2.0, center[1], center[2]])
        writer.writerow(["outside", str(folder), 500.0, 0.0, 0.0])
    args = ["predict", "--model", str(mtl_bundle), "--batch", str(table)]
    args += ["--dicom-sr", str(tmp_path / "sr"), "--dicom-seg", str(tmp_path / "seg")]
    args += ["--heatmap", str(tmp_path / "heat"), "--html", str(tmp_path / "cases.html")]
    result = runner.invoke(app, args)
    assert result.exit_code == 1  # the case outside the scan fails; the others are written
    assert "outside" in result.output
    for case in ("near", "offset"):
        assert (tmp_path / "sr" / f"{case}.dcm").is_file()
        assert (tmp_path / "seg" / f"{case}.dcm").is_file()
        assert (tmp_path / "heat" / f"{case}.nii.gz").is_file()
        hd.sr.srread(tmp_path / "sr" / f"{case}.dcm")
    assert not (tmp_path / "sr" / "outside.dcm").exists()
    page = (tmp_path / "cases.html").read_text()
    assert page.count('<section class="case"') == 2 and "case near" in page


def test_dicom_outputs_of_a_nifti_scan_are_refused(mtl_bundle, dicom_series, tmp_path):
    from tumorchar.bundle.scan import read_scan

    folder, _, _, _, center = dicom_series
    nifti = tmp_path / "scan.nii.gz"
    sitk.WriteImage(read_scan(folder).volume.to_sitk(), str(nifti))
    args = ["predict", "--model", str(mtl_bundle), "--scan", str(nifti), "--at", _at(center)]
    result = runner.invoke(app, [*args, "--modality", "ct", "--dicom-sr", str(tmp_path / "s.dcm")])
    assert result.exit_code == 2
    assert "need a DICOM scan" in " ".join(result.output.split())
    assert not (tmp_path / "s.dcm").exists()
