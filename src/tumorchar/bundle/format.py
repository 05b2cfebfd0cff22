"""The model bundle on disk: a folder with a JSON manifest and checksummed data files.

Layout (format version 1)::

    MODEL_DIR/
      manifest.json        what the model is, how it was trained, a sha256 per file
      estimators.json      the fitted estimators' parameters (see `tumorchar.bundle.state`)
      arrays.npz           their arrays (loaded with allow_pickle=False)
      network.safetensors  network weights (supervised bundles only)

`write_bundle` builds the folder under a temporary name beside the target and renames it
into place, so a reader never sees a half-written bundle. `read_bundle` checks the format
name and version, the manifest's own digest, the file table and every file's size and
sha256 before anything is parsed; a bundle that fails any check is refused with `BundleError`.

The digests detect accidental damage (a truncated copy, a changed byte), not deliberate
tampering: whoever edits a bundle can recompute them. So readers also check every manifest
field they use (`tumorchar.bundle.schema`) and every stored file's structure; a signed
bundle is future work.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tumorchar.errors import BundleError  # noqa: F401  (re-exported)
from tumorchar.provenance import canonical_json as _canonical_json
from tumorchar.provenance import file_sha256, sha256_text

FORMAT_NAME = "tumorchar-model-bundle"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
_DIGEST_KEY = "manifest_sha256"


@dataclass(frozen=True)
class BundleContents:
    """A verified bundle: its manifest and the paths of its (checked) data files."""

    folder: Path
    manifest: dict[str, Any]

    def path(self, name: str) -> Path:
        if name not in self.manifest["files"]:
            raise BundleError(f"model bundle {self.folder} has no file {name!r}")
        return self.folder / name


sha256_file = file_sha256  # hex sha256 of a file's bytes (one definition: provenance)


def canonical_json(data: Any) -> str:
    """The manifest's canonical text: `provenance.canonical_json` indented by 2."""
    return _canonical_json(data, indent=2)


def manifest_digest(manifest: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of the manifest without its own digest entry."""
    body = {key: value for key, value in manifest.items() if key != _DIGEST_KEY}
    return sha256_text(canonical_json(body))


def write_bundle(
    folder: str | os.PathLike,
    manifest: Mapping[str, Any],
    writers: Mapping[str, Callable[[Path], None]],
    overwrite: bool = False,
) -> Path:
    """Write a bundle atomically.

    `writers` maps each data file name to a function that writes that file at the path it
    is given. The manifest gets the format name and version, a `files` table (bytes and
    sha256 of every data file) and its own digest. The folder appears complete or not at all.
    """
    from tumorchar.lock import FolderLock

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FolderLock.beside(folder):  # one writer: a second run into the same bundle refuses
        return _write_bundle(folder, manifest, writers, overwrite)


def _write_bundle(folder: Path, manifest, writers, overwrite: bool) -> Path:
    if folder.exists() and not overwrite:
        raise BundleError(f"{folder} already exists; choose another folder or allow overwrite")
    if folder.exists() and not folder.is_dir():
        raise BundleError(f"{folder} exists and is not a folder")
    for name in writers:
        if name == MANIFEST_NAME or Path(name).name != name:
            raise BundleError(f"invalid bundle file name {name!r}")
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        files = {}
        for name, write in writers.items():
            write(staging / name)
            files[name] = {
                "bytes": (staging / name).stat().st_size,
                "sha256": sha256_file(staging / name),
            }
        full = {**manifest, "format": FORMAT_NAME, "format_version": FORMAT_VERSION}
        full["files"] = files
        full[_DIGEST_KEY] = manifest_digest(full)
        (staging / MANIFEST_NAME).write_text(canonical_json(full) + "\n")
        _move_into_place(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder


def _move_into_place(staging: Path, folder: Path) -> None:
    """Rename `staging` to `folder`; an existing `folder` is swapped out, then removed."""
    if not folder.exists():
        os.replace(staging, folder)
        return
    retired = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old-", dir=folder.parent))
    retired.rmdir()
    os.replace(folder, retired)
    try:
        os.replace(staging, folder)
    except BaseException:
        os.replace(retired, folder)
        raise
    shutil.rmtree(retired, ignore_errors=True)


def read_manifest(folder: str | os.PathLike) -> dict[str, Any]:
    """Parse and check `manifest.json` (format, version, own digest); files are not read."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BundleError(f"no model bundle at {folder} (not a folder)")
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise BundleError(f"{folder} is not a model bundle: {MANIFEST_NAME} is missing")
    try:
        manifest = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BundleError(f"model bundle {folder}: {MANIFEST_NAME} is not valid JSON") from error
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise BundleError(f"{folder} is not a tumorchar model bundle (wrong 'format' field)")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(
            f"model bundle {folder} has format version {version!r}; this tumorchar reads "
            f"version {FORMAT_VERSION} only. Retrain the model with this version "
            f"(the bundle was written by tumorchar {manifest.get('package_version', '?')})."
        )
    if manifest.get(_DIGEST_KEY) != manifest_digest(manifest):
        raise BundleError(
            f"model bundle {folder}: {MANIFEST_NAME} was altered after the bundle was written "
            "(its digest does not match); refusing to load it"
        )
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise BundleError(
            f"model bundle {folder}: manifest field 'files' (the file table) is missing"
        )
    for name, entry in files.items():
        field = f"files.{name}"
        if not isinstance(entry, dict):
            raise BundleError(f"model bundle {folder}: manifest field {field!r} is not an object")
        size, digest = entry.get("bytes"), entry.get("sha256")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise BundleError(
                f"model bundle {folder}: manifest field '{field}.bytes' must be a byte count"
            )
        if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise BundleError(
                f"model bundle {folder}: manifest field '{field}.sha256' must be a sha256 digest"
            )
    return manifest


def read_bundle(folder: str | os.PathLike) -> BundleContents:
    """Check a bundle completely (manifest, then size and sha256 of every listed file)."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    problems = []
    for name, expected in sorted(manifest["files"].items()):
        path = folder / name
        if Path(name).name != name:
            problems.append(f"{name}: invalid file name")
        elif not path.is_file():
            problems.append(f"{name}: missing")
        elif path.stat().st_size != expected.get("bytes"):
            problems.append(f"{name}: size differs from the manifest (altered or truncated)")
        elif sha256_file(path) != expected.get("sha256"):
            problems.append(f"{name}: checksum differs from the manifest (altered)")
    if problems:
        raise BundleError(
            f"model bundle {folder} is damaged, refusing to load it: " + "; ".join(problems)
        )
    return BundleContents(folder=folder, manifest=manifest)
