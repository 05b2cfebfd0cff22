"""Bad-input corpus, reproduce: weights that cannot be used are refused before the first
stage (not minutes into the run), and a second run into the same --out refuses."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from typer.testing import CliRunner

from tumorchar.cli import app

runner = CliRunner()


def _text(result) -> str:
    return " ".join(result.output.translate({ord(c): " " for c in "│╭╮╰╯─"}).split())


def test_weights_that_do_not_fit_the_preset_are_refused_before_any_stage(tmp_path):
    weights = tmp_path / "c3d.pickle"
    weights.write_bytes(b"not used: the cpu preset has no Sports-1M counterpart")
    out = tmp_path / "run"
    result = runner.invoke(app, ["reproduce", "--out", str(out), "--c3d-weights", str(weights)])
    assert result.exit_code == 2
    assert "Sports-1M weights fit only the 'paper' C3D preset" in _text(result)
    assert not out.exists() or not any(p.name != ".tumorchar.lock" for p in out.iterdir())


def test_unreadable_vgg_weights_are_refused_before_any_stage(tmp_path):
    weights = tmp_path / "vgg16.pth"
    weights.write_bytes(b"\x80\x04 this is not a state dict")
    out = tmp_path / "run"
    result = runner.invoke(
        app, ["reproduce", "--out", str(out), "--no-mri", "--vgg-weights", str(weights)]
    )
    assert result.exit_code == 2 and "cannot use the given weights" in _text(result)
    assert not (out / "cohort").exists()


def test_second_reproduce_into_the_same_folder_refuses(tmp_path):
    out = tmp_path / "run"
    code = textwrap.dedent(
        f"""
        import time
        from tumorchar.lock import FolderLock
        FolderLock({str(out)!r}).acquire()
        print("held", flush=True)
        time.sleep(60)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        result = runner.invoke(app, ["reproduce", "--out", str(out), "--no-mri"])
        assert result.exit_code == 2
        assert f"being written by another tumorchar run (process {child.pid}" in _text(result)
        assert not (out / "cohort").exists()
    finally:
        child.kill()
        child.wait()
