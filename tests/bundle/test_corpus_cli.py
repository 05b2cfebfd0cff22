"""Bad-input corpus, command line: a batch never loses work, user text never breaks the
output, and the environment (unwritable, full or misnamed outputs, a concurrent run) ends
in one line naming the path and the cause, exit code 2, no temporary file left."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
import textwrap

import pytest
import SimpleITK as sitk
from typer.testing import CliRunner

from tumorchar.bundle.characterizer import Characterizer
from tumorchar.cli import app

runner = CliRunner()
SLOW = pytest.mark.slow  # these train the session's unsupervised bundle


def _text(result) -> str:
    return " ".join(result.output.translate({ord(c): " " for c in "│╭╮╰╯─"}).split())


@pytest.fixture(scope="module")
def ball(tmp_path_factory, scan_volume):
    volume, center = scan_volume()
    folder = tmp_path_factory.mktemp("scans")
    sitk.WriteImage(volume.to_sitk(), str(folder / "ball.nii.gz"))
    return folder / "ball.nii.gz", center


def batch_csv(folder, ball, case_ids):
    path, (x, y, z) = ball
    rows = "".join(f"{case_id},{path},{x},{y},{z}\n" for case_id in case_ids)
    (folder / "cases.csv").write_text("case_id,scan,x,y,z\n" + rows)
    return folder / "cases.csv"


def predict_args(bundle, csv, out):
    return ["predict", "--model", str(bundle), "--batch", str(csv), "--json", str(out)]


def fail_on(monkeypatch, case_id, error):
    """Make Characterizer.predict raise `error` for one case (a bug, an interruption)."""
    real = Characterizer.predict

    def predict(self, scan, *args, **kwargs):
        if kwargs.get("case_id") == case_id:
            raise error
        return real(self, scan, *args, **kwargs)

    monkeypatch.setattr(Characterizer, "predict", predict)


@SLOW
def test_unexpected_error_in_one_row_is_named_and_the_batch_goes_on(
    unsupervised_bundle, ball, tmp_path, monkeypatch
):
    csv = batch_csv(tmp_path, ball, ["a", "boom", "c"])
    fail_on(monkeypatch, "boom", ZeroDivisionError("division by zero"))
    out = tmp_path / "results.json"
    result = runner.invoke(app, predict_args(unsupervised_bundle, csv, out))
    assert result.exit_code == 1, result.output
    assert "case boom: unexpected ZeroDivisionError: division by zero" in _text(result)
    written = json.loads(out.read_text())
    assert [r["case_id"] for r in written["results"]] == ["a", "c"]
    assert written["failures"] == {
        "boom": "case boom: unexpected ZeroDivisionError: division by zero"
    }
    assert written["complete"] is True


@SLOW
def test_finished_results_survive_an_interruption_and_resume(
    unsupervised_bundle, ball, tmp_path, monkeypatch
):
    csv = batch_csv(tmp_path, ball, ["a", "b", "stop", "d"])
    out = tmp_path / "results.json"
    fail_on(monkeypatch, "stop", KeyboardInterrupt())
    result = runner.invoke(app, predict_args(unsupervised_bundle, csv, out))
    assert result.exit_code != 0
    written = json.loads(out.read_text())
    assert [r["case_id"] for r in written["results"]] == ["a", "b"] and not written["complete"]
    monkeypatch.undo()
    calls = []
    real = Characterizer.predict
    monkeypatch.setattr(
        Characterizer,
        "predict",
        lambda self, *a, **k: calls.append(k["case_id"]) or real(self, *a, **k),
    )
    again = runner.invoke(app, predict_args(unsupervised_bundle, csv, out))
    assert again.exit_code == 0, again.output
    assert calls == ["stop", "d"]  # the finished rows were reused
    assert [r["case_id"] for r in json.loads(out.read_text())["results"]] == ["a", "b", "stop", "d"]


@SLOW
def test_case_id_that_looks_like_markup_is_printed_as_it_is(unsupervised_bundle, ball, tmp_path):
    csv = batch_csv(tmp_path, ball, ["[/oops]", "[bold]x"])
    out = tmp_path / "results.json"
    result = runner.invoke(app, predict_args(unsupervised_bundle, csv, out))
    assert result.exit_code == 0, result.output
    assert "[/oops]" in result.output and "[bold]x" in result.output
    assert [r["case_id"] for r in json.loads(out.read_text())["results"]] == ["[/oops]", "[bold]x"]


@SLOW
def test_failure_message_with_markup_is_printed_as_it_is(unsupervised_bundle, ball, tmp_path):
    path, _ = ball
    (tmp_path / "cases.csv").write_text(f"case_id,scan,x,y,z\n[/x],{path},1,2,[3]\n")
    result = runner.invoke(
        app, predict_args(unsupervised_bundle, tmp_path / "cases.csv", tmp_path / "r.json")
    )
    assert result.exit_code == 1 and "case [/x]: x, y, z must be numbers" in _text(result)


@SLOW
def test_json_at_a_folder_is_refused_before_any_work(unsupervised_bundle, ball, tmp_path):
    csv = batch_csv(tmp_path, ball, ["a"])
    (tmp_path / "out.json").mkdir()
    for args in (
        predict_args(unsupervised_bundle, csv, tmp_path / "out.json"),
        ["predict", "--model", str(unsupervised_bundle), "--scan", str(ball[0]), "--at",
         ",".join(map(str, ball[1])), "--json", str(tmp_path / "out.json")],
    ):  # fmt: skip
        result = runner.invoke(app, args)
        assert result.exit_code == 2
        assert f"--json {tmp_path / 'out.json'} is a folder" in _text(result)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cases.csv", "out.json"]


@SLOW
@pytest.mark.parametrize(
    "code, cause",
    [(errno.ENOSPC, "No space left on device"), (errno.EROFS, "Read-only file system")],
)
def test_full_or_read_only_output_is_one_line_exit_2_no_temporary(
    unsupervised_bundle, ball, tmp_path, monkeypatch, code, cause
):
    import tumorchar._io as io_module

    def broken_fsync(path):
        raise OSError(code, cause, str(path))

    monkeypatch.setattr(io_module, "_fsync_file", broken_fsync)
    out = tmp_path / "out" / "results.json"
    csv = batch_csv(tmp_path, ball, ["a", "b"])
    result = runner.invoke(app, predict_args(unsupervised_bundle, csv, out))
    assert result.exit_code == 2, result.output
    assert f"error: {out}: {cause}" in _text(result)
    assert "Traceback" not in result.output
    assert list((tmp_path / "out").iterdir()) == []  # no temporary, no lock left behind


@SLOW
def test_concurrent_run_into_the_same_json_is_refused(unsupervised_bundle, ball, tmp_path):
    csv = batch_csv(tmp_path, ball, ["a"])
    out = tmp_path / "results.json"
    code = textwrap.dedent(
        f"""
        import time
        from tumorchar.lock import FolderLock
        lock = FolderLock.beside({str(out)!r}).acquire()
        print("held", flush=True)
        time.sleep(60)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        result = runner.invoke(app, predict_args(unsupervised_bundle, csv, out))
        assert result.exit_code == 2
        assert f"being written by another tumorchar run (process {child.pid}" in _text(result)
        assert not out.exists()
    finally:
        child.kill()
        child.wait()


def test_incomplete_store_is_refused_by_train_and_features_unless_allowed(phantom_store, tmp_path):
    import shutil

    store = shutil.copytree(phantom_store, tmp_path / "store")
    meta = json.loads((store / "store.json").read_text())
    meta.update(complete=False, failures={"case999": "case case999: could not be cropped"})
    (store / "store.json").write_text(json.dumps(meta))
    for args in (
        ["train", "unsupervised", "--patches", str(store), "--out", str(tmp_path / "m")],
        ["features", "gist", "--patches", str(store), "--out", str(tmp_path / "f")],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 2
        assert "is incomplete: 1 case(s) failed" in _text(result) and "--allow-incomplete" in _text(
            result
        )
    gist = ["features", "gist", "--patches", str(store), "--out", str(tmp_path / "f")]
    result = runner.invoke(app, [*gist, "--allow-incomplete", "--image-size", "32"])
    assert result.exit_code == 0, result.output
