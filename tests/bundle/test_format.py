import json

import numpy as np
import pytest

from tumorchar.bundle.format import (
    FORMAT_VERSION,
    BundleError,
    read_bundle,
    write_bundle,
)


def _write_small(folder, overwrite=False, values=(1.0, 2.0, 3.0)):
    def arrays(path):
        with open(path, "wb") as handle:
            np.savez(handle, w=np.asarray(values))

    manifest = {"package_version": "0.1.0", "kind": "mtl", "tasks": ["malignancy"]}
    return write_bundle(
        folder,
        manifest,
        {"arrays.npz": arrays, "notes.json": lambda p: p.write_text("{}")},
        overwrite=overwrite,
    )


def test_round_trip_lists_every_file_with_its_checksum(tmp_path):
    folder = _write_small(tmp_path / "model")
    contents = read_bundle(folder)
    assert contents.manifest["format_version"] == FORMAT_VERSION
    assert set(contents.manifest["files"]) == {"arrays.npz", "notes.json"}
    with np.load(contents.path("arrays.npz"), allow_pickle=False) as data:
        assert data["w"].tolist() == [1.0, 2.0, 3.0]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left


def test_existing_folder_is_kept_unless_overwrite(tmp_path):
    folder = _write_small(tmp_path / "model")
    with pytest.raises(BundleError, match="already exists"):
        _write_small(folder)
    _write_small(folder, overwrite=True, values=(7.0,))
    with np.load(read_bundle(folder).path("arrays.npz"), allow_pickle=False) as data:
        assert data["w"].tolist() == [7.0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_failed_write_leaves_nothing(tmp_path):
    def broken(path):
        path.write_text("partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_bundle(tmp_path / "model", {"kind": "mtl"}, {"arrays.npz": broken})
    assert list(tmp_path.iterdir()) == []


def test_altered_file_is_refused(tmp_path):
    folder = _write_small(tmp_path / "model")
    data = bytearray((folder / "arrays.npz").read_bytes())
    data[-30] ^= 0xFF
    (folder / "arrays.npz").write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"arrays.npz: checksum differs .*altered"):
        read_bundle(folder)


def test_truncated_and_missing_files_are_refused(tmp_path):
    folder = _write_small(tmp_path / "model")
    (folder / "notes.json").write_text("{} ")
    (folder / "arrays.npz").unlink()
    with pytest.raises(BundleError) as error:
        read_bundle(folder)
    assert "arrays.npz: missing" in str(error.value)
    assert "notes.json: size differs" in str(error.value)


def test_edited_manifest_is_refused(tmp_path):
    folder = _write_small(tmp_path / "model")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["tasks"] = ["malignancy", "texture"]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="manifest.json was altered"):
        read_bundle(folder)


def test_other_format_version_is_refused(tmp_path):
    folder = _write_small(tmp_path / "model")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["format_version"] = FORMAT_VERSION + 1
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=f"format version {FORMAT_VERSION + 1}"):
        read_bundle(folder)


@pytest.mark.parametrize("content", [None, "not json", '{"format": "something-else"}'])
def test_not_a_bundle(tmp_path, content):
    folder = tmp_path / "model"
    folder.mkdir()
    if content is not None:
        (folder / "manifest.json").write_text(content)
    with pytest.raises(BundleError, match="model bundle|not a tumorchar"):
        read_bundle(folder)
