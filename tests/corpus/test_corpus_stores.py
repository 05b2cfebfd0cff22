"""Bookkeeping corpus: one writer per output folder (a second run refuses, a dead run's lock
is taken over) and readers that refuse a store whose build did not finish."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tumorchar.data.patches import (
    CaseArrays,
    IncompleteStoreError,
    PatchStore,
    PatchStoreWriter,
    build_cases,
)
from tumorchar.features.store import FeatureStore, IncompleteFeaturesError, load_feature_folder
from tumorchar.lock import LOCK_NAME, FolderLock, FolderLockedError


def hold_lock_in_child(folder, seconds=60):
    """A second process that takes the folder's lock and keeps it; returns it once it holds."""
    code = textwrap.dedent(
        f"""
        import sys, time
        from tumorchar.lock import FolderLock
        lock = FolderLock({str(folder)!r}).acquire()
        print("held", flush=True)
        time.sleep({seconds})
        """
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    return child


def case(seed: int) -> CaseArrays:
    volume = np.random.default_rng(seed).normal(size=(4, 6, 6)).astype(np.float32)
    mask = np.zeros((4, 6, 6), bool)
    mask[1:3, 2:4, 2:4] = True
    return CaseArrays(volume, mask, {"patient_id": f"P{seed}", "label": "benign"})


def test_lock_file_names_its_holder_and_goes_away(tmp_path):
    with FolderLock(tmp_path / "out"):
        record = json.loads((tmp_path / "out" / LOCK_NAME).read_text())
        assert record["pid"] == os.getpid() and record["process_start"]
        assert record["locked_utc"]
        with FolderLock(tmp_path / "out"):  # re-entrant in one process
            pass
        assert (tmp_path / "out" / LOCK_NAME).exists()
    assert not (tmp_path / "out" / LOCK_NAME).exists()


def test_second_run_refuses_while_the_first_holds_the_folder(tmp_path):
    child = hold_lock_in_child(tmp_path)
    try:
        with pytest.raises(
            FolderLockedError, match=f"another tumorchar run \\(process {child.pid}"
        ):
            FolderLock(tmp_path).acquire()
        with pytest.raises(FolderLockedError):
            PatchStoreWriter(tmp_path, "phantom", {"a": 1})
    finally:
        child.kill()
        child.wait()


def test_lock_of_a_dead_run_is_taken_over(tmp_path):
    child = hold_lock_in_child(tmp_path)
    child.kill()  # as SIGKILL or a crash would: the lock file stays behind
    child.wait()
    assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == child.pid
    with FolderLock(tmp_path):
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()


def test_a_refused_second_writer_leaves_the_first_runs_files_alone(tmp_path):
    writer = PatchStoreWriter(tmp_path, "phantom", {"a": 1})
    writer.add("c1", case(1))
    (tmp_path / "arrays" / "c2.npz.tmp").write_bytes(b"being written")  # the first run's
    code = (
        "from tumorchar.data.patches import PatchStoreWriter\n"
        f"PatchStoreWriter({str(tmp_path)!r}, 'phantom', {{'a': 1}})\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode != 0 and "FolderLockedError" in result.stderr
    assert "is being written by another tumorchar run" in result.stderr
    assert (tmp_path / "arrays" / "c2.npz.tmp").exists()
    writer.close()


def test_feature_computation_takes_the_feature_sets_lock(tmp_path):
    class Patches:
        case_ids = ["a", "b"]
        content_hash = "h"

    seen = []

    def compute(ids):
        folder = next((tmp_path / "toy").iterdir())
        seen.append(json.loads((folder / LOCK_NAME).read_text())["pid"])
        return np.zeros((len(ids), 2))

    FeatureStore(tmp_path).get_or_compute("toy", {}, Patches(), compute, progress=False)
    assert seen == [os.getpid()]
    assert not list(tmp_path.rglob(LOCK_NAME))


def test_incomplete_patch_store_is_refused_unless_asked_for(tmp_path):
    writer = PatchStoreWriter(tmp_path, "phantom", {"a": 1})

    def maker(case_id):
        if case_id == "c2":
            raise ValueError("case c2: cannot be cropped")
        return case(int(case_id[1]))

    build_cases(writer, ["c1", "c2", "c3"], maker, show_progress=False)
    with pytest.raises(IncompleteStoreError, match="1 case\\(s\\) failed .*c2: cannot be cropped"):
        PatchStore(tmp_path)
    assert PatchStore(tmp_path, allow_incomplete=True).case_ids == ["c1", "c3"]


def test_interrupted_patch_store_is_refused(tmp_path):
    writer = PatchStoreWriter(tmp_path, "phantom", {"a": 1})
    writer.add("c1", case(1))
    writer.flush(complete=False)
    writer.close()
    with pytest.raises(IncompleteStoreError, match="its build was interrupted; 1 case"):
        PatchStore(tmp_path)


def test_interrupted_feature_set_is_refused_unless_asked_for(tmp_path):
    class Patches:
        case_ids = [f"c{i}" for i in range(5)]
        content_hash = "h"

    class Killed(BaseException):
        pass

    def compute(ids):
        if "c4" in ids:
            raise Killed
        return np.ones((len(ids), 3)) * np.array([int(i[1]) for i in ids])[:, None]

    with pytest.raises(Killed):
        FeatureStore(tmp_path).get_or_compute(
            "toy", {}, Patches(), compute, batch_size=2, progress=False
        )
    folder = next((tmp_path / "toy").iterdir())
    with pytest.raises(IncompleteFeaturesError, match="interrupted after 2 batch"):
        load_feature_folder(folder)
    partial = load_feature_folder(folder, allow_incomplete=True)["values"]
    assert partial.case_ids == ("c0", "c1", "c2", "c3") and not partial.provenance["complete"]
    np.testing.assert_array_equal(partial.values[:, 0], [0, 1, 2, 3])
    assert not list(tmp_path.rglob(LOCK_NAME))
