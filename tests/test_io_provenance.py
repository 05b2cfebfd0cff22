"""tumorchar._io (atomic writes) and tumorchar.provenance (keys, hashes, versions)."""

import numpy as np
import pytest

from tumorchar import _io, provenance
from tumorchar.errors import BundleError, ScanError, TrainingError, TumorcharError
from tumorchar.vocab import SCORE_RANGES, TASKS, Weights, pivots


def test_atomic_write_replaces_whole_files_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "a.json"
    _io.write_json_atomic(target, {"b": 1, "a": [1, 2]})
    assert target.read_text().startswith("{\n")
    _io.write_text_atomic(target, "new")
    assert target.read_text() == "new"
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")

    def explode(handle):
        handle.write("half")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        _io.write_atomic(target, explode, mode="w")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_temporary_names_are_unique_per_call(tmp_path):
    names = {_io.temporary_name(tmp_path / "x.npz").name for _ in range(50)}
    assert len(names) == 50


def test_npz_and_parquet_round_trip(tmp_path):
    import pandas as pd

    _io.save_npz_atomic(tmp_path / "a.npz", {"x": np.arange(3)})
    with np.load(tmp_path / "a.npz", allow_pickle=False) as data:
        assert data["x"].tolist() == [0, 1, 2]
    frame = pd.DataFrame({"a": [1, 2]})
    _io.write_parquet_atomic(frame, tmp_path / "t.parquet")
    assert pd.read_parquet(tmp_path / "t.parquet")["a"].tolist() == [1, 2]


def test_canonical_json_is_order_free_and_refuses_nan():
    a = provenance.canonical_json({"b": np.float32(1.5), "a": (1, 2)})
    assert a == '{"a":[1,2],"b":1.5}'
    assert provenance.digest({"x": 1, "y": 2}) == provenance.digest({"y": 2, "x": 1})
    assert provenance.digest({"x": 4}) != provenance.digest({"x": 4.0})  # recipes write once
    with pytest.raises(ValueError):
        provenance.canonical_json({"x": float("nan")})


def test_file_hash_follows_content_not_name(tmp_path):
    (tmp_path / "a").write_bytes(b"weights")
    (tmp_path / "b").write_bytes(b"weights")
    assert provenance.file_sha256(tmp_path / "a") == provenance.file_sha256(tmp_path / "b")
    (tmp_path / "b").write_bytes(b"other")
    assert provenance.file_sha256(tmp_path / "a") != provenance.file_sha256(tmp_path / "b")


def test_package_versions_name_python_and_numpy():
    versions = provenance.package_versions()
    assert versions["numpy"] == np.__version__ and "python" in versions


def test_one_exception_base():
    for error in (ScanError, BundleError, TrainingError):
        assert issubclass(error, TumorcharError) and issubclass(error, ValueError)
    from tumorchar.bundle.scan import ScanError as bundle_scan_error
    from tumorchar.data.lidc import ScanError as lidc_scan_error

    assert bundle_scan_error is lidc_scan_error is ScanError


def test_vocabulary_is_the_one_order_everywhere():
    from tumorchar.data.cohort_store import PAPER_TASKS
    from tumorchar.experiments import e1_mtl
    from tumorchar.features import c3d

    assert PAPER_TASKS == c3d.TASKS == e1_mtl.TASKS == TASKS
    assert TASKS[0] == "malignancy" and len(TASKS) == 7
    assert pivots()[TASKS.index("calcification")] == 3.5 == sum(SCORE_RANGES["calcification"]) / 2
    assert Weights("sports1m").display == "Sports-1M"
