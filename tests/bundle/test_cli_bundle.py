"""`tumorchar train` / `tumorchar predict` from the command line."""

import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
from typer.testing import CliRunner

from tumorchar.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def ball_file(tmp_path_factory, scan_volume):
    volume, center = scan_volume()
    path = tmp_path_factory.mktemp("scans") / "ball.nii.gz"
    sitk.WriteImage(volume.to_sitk(), str(path))
    return path, center


def _text(result) -> str:
    """The command's output with Rich's line wrapping and error-panel borders undone."""
    return " ".join(result.output.translate({ord(c): " " for c in "│╭╮╰╯─"}).split())


def _at(center) -> str:
    return ",".join(f"{v:.3f}" for v in center)


def test_train_refuses_missing_store_and_existing_output(tmp_path):
    result = runner.invoke(
        app, ["train", "mtl", "--patches", str(tmp_path / "none"), "--out", str(tmp_path / "model")]
    )
    assert result.exit_code == 2
    assert "--patches" in _text(result) and "does not exist" in _text(result)
    assert not (tmp_path / "model").exists()
    (tmp_path / "model").mkdir()
    (tmp_path / "none").mkdir()  # a folder, so the check that fails is the output's
    result = runner.invoke(
        app,
        [
            "train",
            "unsupervised",
            "--patches",
            str(tmp_path / "none"),
            "--out",
            str(tmp_path / "model"),
        ],
    )
    assert result.exit_code == 2 and "already exists" in _text(result)


@pytest.mark.slow
def test_predict_prints_and_writes_json(mtl_bundle, ball_file, tmp_path):
    path, center = ball_file
    out = tmp_path / "result.json"
    result = runner.invoke(
        app,
        [
            "predict",
            "--model",
            str(mtl_bundle),
            "--scan",
            str(path),
            "--at",
            _at(center),
            "--json",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    for word in ("malignancy", "texture", "P(malignant)", "phantom"):
        assert word in _text(result)
    written = json.loads(out.read_text())
    assert written["case_id"] == "ball" and written["kind"] == "mtl"
    assert written["label"] in ("benign", "malignant")


@pytest.mark.slow
@pytest.mark.parametrize(
    "extra, message",
    [
        (["--at", "900,0,0"], "outside the scan"),
        (["--at", "1,2"], "expected X,Y,Z"),
        (["--at", "1,2,3", "--units", "inch"], "is not one of"),  # the choices are listed
        (["--modality", "mri", "--at", "0,0,0", "--units", "voxel"], "trained on CT"),
    ],
)
def test_bad_requests_fail_clearly_and_write_nothing(
    mtl_bundle, ball_file, tmp_path, extra, message
):
    path, _ = ball_file
    out = tmp_path / "result.json"
    result = runner.invoke(
        app,
        ["predict", "--model", str(mtl_bundle), "--scan", str(path), "--json", str(out), *extra],
    )
    assert result.exit_code == 2
    assert message in _text(result)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_altered_bundle_and_scan_without_spacing_write_nothing(mtl_bundle, ball_file, tmp_path):
    path, center = ball_file
    altered = shutil.copytree(mtl_bundle, tmp_path / "model")
    (altered / "estimators.json").write_text((altered / "estimators.json").read_text() + " ")
    out = tmp_path / "result.json"
    result = runner.invoke(
        app,
        [
            "predict",
            "--model",
            str(altered),
            "--scan",
            str(path),
            "--at",
            _at(center),
            "--json",
            str(out),
        ],
    )
    assert result.exit_code == 2 and "estimators.json: size differs" in _text(result)
    raw = np.zeros((4, 5, 6), np.int16)
    header = b"NRRD0004\ntype: short\ndimension: 3\nsizes: 6 5 4\nendian: little\n"
    (tmp_path / "plain.nrrd").write_bytes(header + b"encoding: raw\n\n" + raw.tobytes())
    result = runner.invoke(
        app,
        [
            "predict",
            "--model",
            str(mtl_bundle),
            "--scan",
            str(tmp_path / "plain.nrrd"),
            "--at",
            "1,1,1",
            "--units",
            "voxel",
            "--json",
            str(out),
        ],
    )
    assert result.exit_code == 2 and "distances in mm are unknown" in _text(result)
    assert not out.exists()


@pytest.mark.slow
def test_batch_goes_on_past_a_bad_case_and_resumes(unsupervised_bundle, ball_file, tmp_path):
    path, center = ball_file
    shutil.copy(path, tmp_path / "ball.nii.gz")
    mask = np.zeros(sitk.GetArrayFromImage(sitk.ReadImage(str(path))).shape, np.uint8)
    mask[13:16, 38:45, 44:51] = 1
    image = sitk.GetImageFromArray(mask)
    image.CopyInformation(sitk.ReadImage(str(path)))
    sitk.WriteImage(image, str(tmp_path / "ball_mask.nii.gz"))
    x, y, z = center
    (tmp_path / "cases.csv").write_text(
        "case_id,scan,x,y,z,units,mask\n"
        f"first,ball.nii.gz,{x},{y},{z},mm,\n"
        "outside,ball.nii.gz,0,0,999,voxel,\n"
        "masked,ball.nii.gz,,,,,ball_mask.nii.gz\n"
    )
    out = tmp_path / "results.json"
    args = [
        "predict",
        "--model",
        str(unsupervised_bundle),
        "--batch",
        str(tmp_path / "cases.csv"),
        "--json",
        str(out),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert "1 of 3 case(s) failed" in _text(result) and "case outside" in _text(result)
    written = json.loads(out.read_text())
    assert [r["case_id"] for r in written["results"]] == ["first", "masked"]
    assert written["results"][0]["label"] == written["results"][1]["label"]
    assert set(written["failures"]) == {"outside"}
    again = runner.invoke(app, args)
    assert again.exit_code == 1
    assert json.loads(out.read_text())["results"] == written["results"]


def test_help_lists_the_options():
    assert "--patches" in _text(runner.invoke(app, ["train", "mtl", "--help"]))
    assert "--patches" in _text(runner.invoke(app, ["train", "unsupervised", "--help"]))
    text = _text(runner.invoke(app, ["predict", "--help"]))
    for option in ("--model", "--scan", "--at", "--units", "--mask", "--batch", "--json"):
        assert option in text


def test_load_model_is_imported_lazily():
    import os
    import subprocess
    import sys
    from pathlib import Path

    import tumorchar

    env = os.environ | {"PYTHONPATH": str(Path(tumorchar.__file__).parents[1])}
    script = (
        "import sys, tumorchar; light = 'numpy' not in sys.modules; "
        "tumorchar.load_model; print(light, 'numpy' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, env=env
    )
    assert done.stdout.split() == ["True", "True"]
