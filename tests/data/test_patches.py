import json
import os

import numpy as np
import pytest

from tumorchar.data import patches as patches_module
from tumorchar.data.patches import (
    INDEX_COLUMNS,
    CaseArrays,
    IncompleteStoreError,
    PatchStore,
    PatchStoreWriter,
    StoreMismatchError,
    build_cases,
)


def make_case(case_id: str) -> CaseArrays:
    seed = int(case_id[-1])
    volume = np.random.default_rng(seed).normal(size=(6, 8, 8)).astype(np.float32)
    mask = np.zeros((6, 8, 8), bool)
    mask[2:5, 3:6, 3:6] = True
    row = {"patient_id": f"P{seed}", "label": "benign", "malignancy": 1.5, "spacing_mm": 0.5}
    return CaseArrays(volume=volume, mask=mask, row=row)


def build(folder, ids=("c1", "c2", "c3"), maker=make_case, settings=None):
    writer = PatchStoreWriter(
        folder, "phantom", settings or {"a": 1}, is_phantom=True, note="PHANTOM"
    )
    return build_cases(writer, ids, maker, show_progress=False)


def test_store_round_trip(tmp_path):
    report = build(tmp_path)
    assert report.written == ["c1", "c2", "c3"] and not report.failures
    store = PatchStore(tmp_path)
    assert list(store.index.columns) == list(INDEX_COLUMNS)
    assert store.case_ids == ["c1", "c2", "c3"]
    assert store.source == "phantom" and store.is_phantom and store.note == "PHANTOM"
    patch = store.load("c2")
    expected = make_case("c2")
    np.testing.assert_array_equal(patch.volume, expected.volume)
    np.testing.assert_array_equal(patch.slice2d, expected.volume[3])  # central: z // 2
    np.testing.assert_array_equal(patch.mask2d, expected.mask[3])
    assert patch.info["patient_id"] == "P2" and patch.info["malignancy"] == 1.5
    assert np.isnan(patch.info["texture"])
    assert store.volumes().shape == (3, 6, 8, 8)
    assert store.slices(["c3", "c1"]).shape == (2, 8, 8)
    assert store.masks().dtype == bool
    with np.load(tmp_path / "arrays" / "c1.npz", allow_pickle=False) as data:
        assert sorted(data.files) == ["mask", "mask2d", "slice2d", "volume"]


def test_content_hash_follows_the_content(tmp_path):
    build(tmp_path / "a")
    build(tmp_path / "b")
    build(tmp_path / "c", ids=("c1", "c2"))
    hashes = [PatchStore(tmp_path / x).content_hash for x in "abc"]
    assert hashes[0] == hashes[1] != hashes[2]


def test_rerun_skips_finished_cases_and_redoes_missing_ones(tmp_path):
    build(tmp_path)
    calls = []

    def counting(case_id):
        calls.append(case_id)
        return make_case(case_id)

    report = build(tmp_path, maker=counting)
    assert calls == [] and report.skipped == ["c1", "c2", "c3"]
    (tmp_path / "arrays" / "c2.npz").unlink()
    report = build(tmp_path, maker=counting)
    assert calls == ["c2"] and report.written == ["c2"]
    assert PatchStore(tmp_path).case_ids == ["c1", "c2", "c3"]


def test_other_settings_refuse_to_resume(tmp_path):
    build(tmp_path)
    with pytest.raises(StoreMismatchError, match="another output folder"):
        build(tmp_path, settings={"a": 2})


def test_bad_case_is_listed_and_the_batch_goes_on(tmp_path):
    def flaky(case_id):
        if case_id == "c2":
            raise ValueError("case c2: the scan is broken")
        if case_id == "c3":
            case = make_case(case_id)
            return CaseArrays(case.volume, np.zeros_like(case.mask), case.row)
        return make_case(case_id)

    report = build(tmp_path, ids=("c1", "c2", "c3", "c4"), maker=flaky)
    assert report.written == ["c1", "c4"]
    assert report.failures == {"c2": "case c2: the scan is broken", "c3": "case c3: empty mask"}
    meta = json.loads((tmp_path / "store.json").read_text())
    assert meta["failures"]["c2"] == "case c2: the scan is broken" and not meta["complete"]
    assert sorted(p.name for p in (tmp_path / "arrays").iterdir()) == ["c1.npz", "c4.npz"]


def test_crash_while_writing_leaves_no_half_written_file(tmp_path, monkeypatch):
    real_write = np.lib.format.write_array

    def crash_on_c2(member, array, **kwargs):
        if crash_on_c2.target and array.shape == (6, 8, 8) and array.dtype == bool:
            member.write(b"partial")
            raise KeyboardInterrupt  # the user pressing Ctrl-C mid-write
        return real_write(member, array, **kwargs)

    crash_on_c2.target = False

    def maker(case_id):
        crash_on_c2.target = case_id == "c2"
        return make_case(case_id)

    monkeypatch.setattr(patches_module.np.lib.format, "write_array", crash_on_c2)
    with pytest.raises(KeyboardInterrupt):
        build(tmp_path, maker=maker)
    monkeypatch.setattr(patches_module.np.lib.format, "write_array", real_write)
    assert not (tmp_path / "arrays" / "c2.npz").exists()
    assert not list(tmp_path.rglob("*tmp*"))
    with pytest.raises(IncompleteStoreError, match="its build was interrupted; 1 case"):
        PatchStore(tmp_path)
    # the index keeps what was finished
    assert PatchStore(tmp_path, allow_incomplete=True).case_ids == ["c1"]
    report = build(tmp_path)
    assert report.skipped == ["c1"] and report.written == ["c2", "c3"]
    np.testing.assert_array_equal(PatchStore(tmp_path).load("c2").mask, make_case("c2").mask)


def test_invalid_label_and_case_id_are_failures(tmp_path):
    def maker(case_id):
        case = make_case("c1")
        return CaseArrays(case.volume, case.mask, {**case.row, "label": "maybe"})

    report = build(tmp_path, ids=("c1", "../x1"), maker=maker)
    assert "label 'maybe'" in report.failures["c1"]
    assert "invalid case id" in report.failures["../x1"]


def test_threaded_batch_gives_the_same_store(tmp_path):
    build(tmp_path / "serial")
    writer = PatchStoreWriter(
        tmp_path / "threads", "phantom", {"a": 1}, is_phantom=True, note="PHANTOM"
    )
    build_cases(writer, ["c1", "c2", "c3"], make_case, workers=2, show_progress=False)
    serial, threaded = PatchStore(tmp_path / "serial"), PatchStore(tmp_path / "threads")
    assert serial.content_hash == threaded.content_hash


def test_stale_temporary_files_are_removed_on_reopen(tmp_path):
    build(tmp_path)
    dead = 2**22 + 7  # above Linux's largest pid: the writer is gone
    (tmp_path / "arrays" / f".c9.npz.tmp-{dead}-ab12").write_bytes(b"half")
    (tmp_path / f".index.parquet.tmp-{dead}-cd34").write_bytes(b"half")
    live = tmp_path / f".store.json.tmp-{os.getpid()}-ef56"  # a running writer's: kept
    live.write_bytes(b"busy")
    build(tmp_path)
    assert [p.name for p in tmp_path.rglob("*tmp*")] == [live.name]


def test_stacking_cases_of_different_shapes_is_refused(tmp_path):
    def maker(case_id):
        case = make_case(case_id)
        if case_id == "c2":  # e.g. an MRI case spanning fewer ROI slices
            return CaseArrays(case.volume[:4], case.mask[:4], case.row)
        return case

    build(tmp_path, maker=maker)
    store = PatchStore(tmp_path)
    with pytest.raises(ValueError, match="different shapes"):
        store.volumes()
    assert store.slices().shape == (3, 8, 8)
    assert store.volumes(["c1", "c3"]).shape == (2, 6, 8, 8)


def make_case2d(case_id: str) -> CaseArrays:
    seed = int(case_id[-1])
    image = np.random.default_rng(seed).normal(size=(8, 8)).astype(np.float32)
    mask = np.zeros((8, 8), bool)
    mask[3:6, 3:6] = True
    row = {"patient_id": f"P{seed}", "label": "malignant", "annotation_id": 100 + seed}
    return CaseArrays.image2d(image, mask, row)


def test_2d_store_round_trip(tmp_path):
    writer = PatchStoreWriter(
        tmp_path, "lidc-maxslice", {"b": 2}, kind="2d", extra_columns=("annotation_id",)
    )
    report = build_cases(writer, ["c1", "c2"], make_case2d, show_progress=False)
    assert report.written == ["c1", "c2"]
    store = PatchStore(tmp_path)
    assert store.kind == "2d" and not store.has_volumes and not store.is_phantom
    assert list(store.index.columns) == [*INDEX_COLUMNS, "annotation_id"]
    assert store.index["annotation_id"].tolist() == [101, 102]
    np.testing.assert_array_equal(store.slices(["c2"])[0], make_case2d("c2").slice2d)
    assert store.masks2d().shape == (2, 8, 8)
    patch = store.load("c1")
    assert patch.volume is None and patch.mask is None
    for reader in (store.volumes, store.masks):
        with pytest.raises(patches_module.StoreKindError, match="2d store"):
            reader()
    with np.load(tmp_path / "arrays" / "c1.npz", allow_pickle=False) as data:
        assert sorted(data.files) == ["mask2d", "slice2d"]
    # a 3D store of the same folder is refused, and so is a 3D case in a 2D store
    with pytest.raises(StoreMismatchError):
        PatchStoreWriter(tmp_path, "lidc-maxslice", {"b": 2}, kind="3d")
    report = build_cases(writer, ["c3"], make_case, show_progress=False)
    assert "2D store holds no volume" in report.failures["c3"]


def test_3d_store_hash_is_unchanged_by_the_2d_kind(tmp_path):
    """Existing 3D stores keep their content hashes (the hash covers the same arrays)."""
    import hashlib

    build(tmp_path)
    patch = PatchStore(tmp_path).load("c1")
    digest = hashlib.sha256()  # the hash as 3D stores were written before 2D stores existed
    for key in ("volume", "slice2d", "mask", "mask2d"):
        a = np.ascontiguousarray(getattr(patch, key))
        digest.update(f"{key}|{a.dtype.str}|{a.shape}|".encode())
        digest.update(a.data)
    assert digest.hexdigest() == PatchStore(tmp_path).index["content_hash"][0]
    meta = json.loads((tmp_path / "store.json").read_text())
    assert meta["kind"] == "3d"
    assert PatchStore(tmp_path).kind == "3d"
