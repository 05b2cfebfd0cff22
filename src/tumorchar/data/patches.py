"""The patch store: one folder per dataset, read by every feature extractor.

Layout (docs/architecture.md, stage 2):

- `index.parquet`: one row per case: `case_id patient_id source label`, the 7 mean scores
  (NaN for MRI), their Eq. 5 inconsistency `psi_<task>` (NaN when unknown),
  `equivalent_diameter_mm spacing_mm padded_fraction content_hash`, then any columns the
  builder declares (`extra_columns`, e.g. the max-slice store's `annotation_id`);
- `arrays/<case_id>.npz`: in a 3D store (`kind` "3d") `volume` float32 (z, y, x), `slice2d`
  float32 (y, x) (the central axial slice, index z // 2), `mask` bool (z, y, x), `mask2d`
  bool (y, x); in a 2D store (`kind` "2d": one image per case, e.g. the LIDC max-slice
  crops) only `slice2d` and `mask2d`;
- `store.json`: source, kind, phantom flag and note, settings, failures, the store's hash.

Readers ask `PatchStore.kind` (or `has_volumes`) instead of assuming volumes: `slices()` and
`masks2d()` work on both kinds, `volumes()` and `masks()` only on 3D stores.

Writing is atomic (temporary file in the same folder, then `os.replace`) and resumable: a
case whose row is in the index and whose arrays file exists is not computed again, and a
store is only reopened with the same source and settings. `build_cases` runs a batch: it
goes on after a failing case, shows a Rich progress bar and lists the failures at the end.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import zipfile
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from tumorchar._io import (
    atomic_path,
    remove_stale_temporaries,
    write_json_atomic,
    write_parquet_atomic,
)
from tumorchar.data.cohort_store import PAPER_TASKS
from tumorchar.errors import (  # noqa: F401  (re-exported)
    CaseError,
    StoreKindError,
    StoreMismatchError,
    TumorcharError,
)
from tumorchar.lock import FolderLock
from tumorchar.vocab import PSI_COLUMNS

INDEX_NAME = "index.parquet"
STORE_NAME = "store.json"
ARRAYS_DIR = "arrays"
SOURCES = ("lidc", "lidc-maxslice", "phantom", "mri")
KINDS = ("3d", "2d")
LABELS = ("benign", "malignant", "excluded", "normal", "ipmn")
SCORE_COLUMNS = PAPER_TASKS
INDEX_COLUMNS = (
    "case_id",
    "patient_id",
    "source",
    "label",
    *SCORE_COLUMNS,
    *PSI_COLUMNS,
    "equivalent_diameter_mm",
    "spacing_mm",
    "padded_fraction",
    "content_hash",
)
ARRAY_KEYS = ("volume", "slice2d", "mask", "mask2d")
ARRAY_KEYS_BY_KIND = {"3d": ARRAY_KEYS, "2d": ("slice2d", "mask2d")}
FORMAT_VERSION = 1
# the index is rewritten (atomically) at least this often while a batch runs, for resuming
INDEX_FLUSH_SECONDS = 10.0


class IncompleteStoreError(TumorcharError):
    """A store whose build did not finish, or finished with failed cases (`complete: false`)."""


@dataclass(frozen=True)
class Patch:
    case_id: str
    volume: np.ndarray | None  # None in a 2D store
    slice2d: np.ndarray
    mask: np.ndarray | None  # None in a 2D store
    mask2d: np.ndarray
    info: dict


@dataclass(frozen=True)
class CaseArrays:
    """What a builder returns for one case: its arrays and its index row (no hash).

    A 3D case gives `volume` and `mask` (`slice2d` / `mask2d` default to their central
    slice); a 2D case gives only `slice2d` and `mask2d` (see `image2d`).
    """

    volume: np.ndarray | None
    mask: np.ndarray | None
    row: dict
    slice2d: np.ndarray | None = None  # default: volume[z // 2]
    mask2d: np.ndarray | None = None  # default: mask[z // 2]

    @classmethod
    def image2d(cls, slice2d: np.ndarray, mask2d: np.ndarray, row: dict) -> CaseArrays:
        """A case of a 2D store: one image and its mask."""
        return cls(volume=None, mask=None, row=row, slice2d=slice2d, mask2d=mask2d)


@dataclass
class BatchReport:
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)


def _case_hash(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 over each array's name, dtype, shape and bytes, in ARRAY_KEYS order (the
    arrays the case has: a 2D case hashes `slice2d` and `mask2d`)."""
    h = hashlib.sha256()
    for key in (k for k in ARRAY_KEYS if k in arrays):
        a = np.ascontiguousarray(arrays[key])
        h.update(f"{key}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.data)
    return h.hexdigest()


def _store_hash(source: str, settings: dict, index: pd.DataFrame) -> str:
    """SHA-256 of the source, the settings and the sorted (case_id, content_hash) pairs."""
    h = hashlib.sha256(
        json.dumps({"source": source, "settings": settings}, sort_keys=True).encode()
    )
    for case_id, case_hash in sorted(zip(index["case_id"], index["content_hash"], strict=True)):
        h.update(f"{case_id}:{case_hash}\n".encode())
    return h.hexdigest()


def _atomic_json(path: Path, payload: dict) -> None:
    write_json_atomic(path, payload, default=float)


def _write_npz(path: Path, arrays: dict[str, np.ndarray], compress: Sequence[str]) -> None:
    """An `.npz` readable by `np.load`: members in `compress` deflated, the others stored
    (noisy float32 barely compresses and zlib would dominate the write time)."""
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", allowZip64=True) as archive:
        for key, value in arrays.items():
            kind = zipfile.ZIP_DEFLATED if key in compress else zipfile.ZIP_STORED
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = kind
            with archive.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)


def _check_case_id(case_id: str) -> None:
    if not case_id or "/" in case_id or "\\" in case_id or case_id.startswith("."):
        raise CaseError(f"invalid case id {case_id!r} (no path separators, not hidden)")


class PatchStoreWriter:
    """Writes one store folder; reopening it with the same source and settings resumes.

    `kind` is "3d" (volumes and their central slices) or "2d" (one image per case);
    `extra_columns` are index columns beyond INDEX_COLUMNS that this builder fills; `info`
    is written to store.json as is (e.g. how the cases were linked) and, unlike
    `settings`, does not decide whether a folder may be resumed.
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        source: str,
        settings: dict,
        is_phantom: bool = False,
        note: str = "",
        compress_arrays: Sequence[str] = ("mask", "mask2d"),
        kind: str = "3d",
        extra_columns: Sequence[str] = (),
        info: dict | None = None,
    ):
        if source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if clash := set(extra_columns) & set(INDEX_COLUMNS):
            raise ValueError(f"extra columns {sorted(clash)} are already index columns")
        self.folder = Path(folder)
        self.source, self.settings = source, json.loads(json.dumps(settings, default=float))
        self.kind, self.extra_columns = kind, tuple(extra_columns)
        self.info = json.loads(json.dumps(info or {}, default=float))
        self.is_phantom, self.note = bool(is_phantom), note
        self.compress_arrays = tuple(compress_arrays)
        self.arrays_dir = self.folder / ARRAYS_DIR
        # one writer per folder: a second run refuses here, before it touches anything
        self._lock = FolderLock(self.folder).acquire()
        self.arrays_dir.mkdir(parents=True, exist_ok=True)
        for folder in (self.folder, self.arrays_dir):
            remove_stale_temporaries(folder)  # left by an interrupted run (we hold the lock)
        self._rows: dict[str, dict] = {}
        try:
            self._check_existing()
        except BaseException:
            self.close()
            raise
        self._last_flush = time.monotonic()

    def close(self) -> None:
        """Release the folder's lock (the writer may still be flushed by this process)."""
        self._lock.release()

    def __enter__(self) -> PatchStoreWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _check_existing(self) -> None:
        meta_path = self.folder / STORE_NAME
        if not meta_path.is_file():
            return
        meta = json.loads(meta_path.read_text())
        same = (meta.get("source"), meta.get("kind", "3d"), meta.get("settings")) == (
            self.source,
            self.kind,
            self.settings,
        )
        if not same:
            raise StoreMismatchError(
                f"{self.folder} holds a {meta.get('source')} store with settings "
                f"{meta.get('settings')}; asked for {self.source} with {self.settings}. "
                "Use another output folder."
            )
        index_path = self.folder / INDEX_NAME
        if index_path.is_file():
            for row in pd.read_parquet(index_path).to_dict("records"):
                if (self.arrays_dir / f"{row['case_id']}.npz").is_file():
                    self._rows[row["case_id"]] = row

    def is_done(self, case_id: str) -> bool:
        return case_id in self._rows

    def add(self, case_id: str, case: CaseArrays) -> None:
        """Validate and write one case's arrays atomically, then record its index row."""
        _check_case_id(case_id)
        arrays = self._arrays2d(case_id, case) if self.kind == "2d" else self._arrays(case_id, case)
        row = {c: case.row.get(c, np.nan) for c in (*INDEX_COLUMNS, *self.extra_columns)}
        row.update(case_id=case_id, source=self.source, content_hash=_case_hash(arrays))
        if row["label"] not in LABELS:
            raise CaseError(f"case {case_id}: label {row['label']!r} not in {LABELS}")
        if not isinstance(row["patient_id"], str):
            row["patient_id"] = case_id
        _write_npz(self.arrays_dir / f"{case_id}.npz", arrays, self.compress_arrays)
        self._rows[case_id] = row
        if time.monotonic() - self._last_flush > INDEX_FLUSH_SECONDS:
            self.flush()

    @staticmethod
    def _arrays2d(case_id: str, case: CaseArrays) -> dict[str, np.ndarray]:
        if case.volume is not None or case.mask is not None:
            raise CaseError(f"case {case_id}: a 2D store holds no volume or 3D mask")
        if case.slice2d is None or case.mask2d is None:
            raise CaseError(f"case {case_id}: a 2D case needs slice2d and mask2d")
        image = np.ascontiguousarray(case.slice2d, dtype=np.float32)
        mask = np.ascontiguousarray(case.mask2d, dtype=bool)
        if image.ndim != 2 or mask.shape != image.shape:
            raise CaseError(
                f"case {case_id}: image {image.shape} and mask {mask.shape} must be equal 2D"
            )
        if not np.all(np.isfinite(image)):
            raise CaseError(f"case {case_id}: the image has non-finite values")
        if not mask.any():
            raise CaseError(f"case {case_id}: empty mask")
        return {"slice2d": image, "mask2d": mask}

    @staticmethod
    def _arrays(case_id: str, case: CaseArrays) -> dict[str, np.ndarray]:
        if case.volume is None or case.mask is None:
            raise CaseError(f"case {case_id}: a 3D store needs a volume and its mask")
        volume = np.ascontiguousarray(case.volume, dtype=np.float32)
        mask = np.ascontiguousarray(case.mask, dtype=bool)
        if volume.ndim != 3 or mask.shape != volume.shape:
            raise CaseError(
                f"case {case_id}: volume {volume.shape} and mask {mask.shape} must be equal 3D"
            )
        if not np.all(np.isfinite(volume)):
            raise CaseError(f"case {case_id}: the volume has non-finite values")
        if not mask.any():
            raise CaseError(f"case {case_id}: empty mask")
        middle = volume.shape[0] // 2
        slice2d = volume[middle] if case.slice2d is None else case.slice2d
        mask2d = mask[middle] if case.mask2d is None else case.mask2d
        return {
            "volume": volume,
            "slice2d": np.ascontiguousarray(slice2d, dtype=np.float32),
            "mask": mask,
            "mask2d": np.ascontiguousarray(mask2d, dtype=bool),
        }

    def index(self) -> pd.DataFrame:
        rows = sorted(self._rows.values(), key=lambda r: r["case_id"])
        table = pd.DataFrame(rows, columns=[*INDEX_COLUMNS, *self.extra_columns])
        numeric = (*SCORE_COLUMNS, *PSI_COLUMNS, "equivalent_diameter_mm", "spacing_mm")
        for column in (*numeric, "padded_fraction"):
            table[column] = table[column].astype(float)
        return table

    def flush(self, failures: dict[str, str] | None = None, complete: bool = False) -> None:
        """Rewrite index.parquet and store.json atomically (index first)."""
        table = self.index()
        write_parquet_atomic(table, self.folder / INDEX_NAME)
        _atomic_json(
            self.folder / STORE_NAME,
            {
                "format": FORMAT_VERSION,
                "source": self.source,
                "kind": self.kind,
                "is_phantom": self.is_phantom,
                "note": self.note,
                "settings": self.settings,
                "n_cases": len(table),
                "complete": complete,
                "failures": failures or {},
                "content_hash": _store_hash(self.source, self.settings, table),
                **({"info": self.info} if self.info else {}),
            },
        )
        self._last_flush = time.monotonic()


def build_cases(
    writer: PatchStoreWriter,
    case_ids: Iterable[str],
    make_case: Callable[[str], CaseArrays],
    description: str = "patches",
    workers: int = 1,
    show_progress: bool = True,
) -> BatchReport:
    """Make and store every case not already in the store, `workers` at a time.

    A case that raises is recorded as a failure (message naming the case) and the batch
    goes on; the index and store.json are written at the end with the failure list.
    """
    from rich.progress import MofNCompleteColumn, Progress

    report = BatchReport()
    todo = []
    for case_id in case_ids:
        (report.skipped if writer.is_done(case_id) else todo).append(case_id)

    def run(case_id: str):
        try:
            return case_id, make_case(case_id), None
        except Exception as error:  # noqa: BLE001 - any failure is reported per case
            message = str(error) if case_id in str(error) else f"case {case_id}: {error}"
            return case_id, None, message or f"case {case_id}: {type(error).__name__}"

    def store(result) -> None:
        case_id, case, message = result
        if case is not None:
            try:
                writer.add(case_id, case)
                report.written.append(case_id)
                return
            except Exception as error:  # noqa: BLE001
                message = str(error) if case_id in str(error) else f"case {case_id}: {error}"
        report.failures[case_id] = message

    columns = (*Progress.get_default_columns(), MofNCompleteColumn())
    try:
        with Progress(*columns, disable=not show_progress, transient=False) as progress:
            task = progress.add_task(description, total=len(todo))
            if workers <= 1:
                for case_id in todo:
                    store(run(case_id))
                    progress.advance(task)
            else:
                _run_threaded(todo, run, store, workers, lambda: progress.advance(task))
    except BaseException:  # interrupted: keep what is finished, so a rerun resumes from it
        writer.flush(failures=report.failures, complete=False)
        writer.close()
        raise
    writer.flush(failures=report.failures, complete=not report.failures)
    writer.close()
    return report


def _run_threaded(todo, run, store, workers: int, advance) -> None:
    """Compute cases on `workers` threads (NumPy/SciPy release the GIL), write them on this
    one; at most 2·workers results wait in memory."""
    pending = set()
    queue = iter(todo)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for case_id in queue:
            pending.add(pool.submit(run, case_id))
            if len(pending) >= 2 * workers:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    store(future.result())
                    advance()
        for future in pending:
            store(future.result())
            advance()


class PatchStore:
    """A store folder opened for reading.

    A store whose `store.json` says `complete: false` (its build was interrupted, or some
    cases failed) is refused with `IncompleteStoreError`, unless `allow_incomplete=True`
    asks for its finished cases (those in the index; `failures` lists the others).
    """

    def __init__(self, folder: str | os.PathLike, allow_incomplete: bool = False):
        self.folder = Path(folder)
        meta_path, index_path = self.folder / STORE_NAME, self.folder / INDEX_NAME
        for path in (meta_path, index_path):
            if not path.is_file():
                raise FileNotFoundError(f"patch store {self.folder} has no {path.name}")
        try:
            self.meta = json.loads(meta_path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ValueError(f"patch store {self.folder}: {STORE_NAME} is not valid JSON") from None
        if not isinstance(self.meta, dict):
            raise ValueError(f"patch store {self.folder}: {STORE_NAME} is not a JSON object")
        self.index = pd.read_parquet(index_path)
        if self.meta.get("complete", True) is not True and not allow_incomplete:
            raise IncompleteStoreError(self._incomplete_message())

    def _incomplete_message(self) -> str:
        failures = self.meta.get("failures") or {}
        why = (
            f"{len(failures)} case(s) failed (first: {next(iter(failures.values()))})"
            if failures
            else "its build was interrupted"
        )
        return (
            f"patch store {self.folder} is incomplete: {why}; {len(self.index)} case(s) are "
            "finished. Rerun the build to complete it, or allow an incomplete store "
            "(allow_incomplete=True, --allow-incomplete) to use the finished cases only"
        )

    @property
    def case_ids(self) -> list[str]:
        return self.index["case_id"].tolist()

    @property
    def source(self) -> str:
        return self.meta["source"]

    @property
    def kind(self) -> str:
        """ "3d" (volumes, masks and their central slices) or "2d" (one image per case)."""
        return self.meta.get("kind", "3d")

    @property
    def has_volumes(self) -> bool:
        return self.kind == "3d"

    @property
    def info(self) -> dict:
        return self.meta.get("info", {})

    @property
    def is_phantom(self) -> bool:
        return bool(self.meta.get("is_phantom", False))

    @property
    def note(self) -> str:
        return self.meta.get("note", "")

    @property
    def settings(self) -> dict:
        return self.meta.get("settings", {})

    @property
    def failures(self) -> dict[str, str]:
        return self.meta.get("failures", {})

    @property
    def content_hash(self) -> str:
        return self.meta["content_hash"]

    def _arrays(self, case_id: str):
        if case_id not in set(self.index["case_id"]):
            raise KeyError(f"case {case_id!r} is not in the patch store {self.folder}")
        return np.load(self.folder / ARRAYS_DIR / f"{case_id}.npz", allow_pickle=False)

    def load(self, case_id: str) -> Patch:
        with self._arrays(case_id) as data:
            arrays = {key: data[key] if key in data.files else None for key in ARRAY_KEYS}
        info = self.index.loc[self.index["case_id"] == case_id].iloc[0].to_dict()
        return Patch(case_id=case_id, info=info, **arrays)

    def _stack(self, key: str, case_ids: Sequence[str] | None) -> np.ndarray:
        if key not in ARRAY_KEYS_BY_KIND[self.kind]:
            raise StoreKindError(
                f"patch store {self.folder} is a {self.kind} store ({self.source}): it has no "
                f"{key!r} arrays; use slices() and masks2d()"
            )
        ids = self.case_ids if case_ids is None else list(case_ids)
        arrays = []
        for case_id in ids:
            with self._arrays(case_id) as data:
                arrays.append(data[key])
        shapes = {a.shape for a in arrays}
        if len(shapes) > 1:
            raise ValueError(
                f"{key} arrays of this store have different shapes {sorted(shapes)[:3]}; "
                "load them one case at a time"
            )
        if not arrays:
            return np.zeros((0,), np.float32)
        return np.stack(arrays)

    def volumes(self, case_ids: Sequence[str] | None = None) -> np.ndarray:
        return self._stack("volume", case_ids)

    def slices(self, case_ids: Sequence[str] | None = None) -> np.ndarray:
        return self._stack("slice2d", case_ids)

    def masks(self, case_ids: Sequence[str] | None = None) -> np.ndarray:
        return self._stack("mask", case_ids)

    def masks2d(self, case_ids: Sequence[str] | None = None) -> np.ndarray:
        return self._stack("mask2d", case_ids)
