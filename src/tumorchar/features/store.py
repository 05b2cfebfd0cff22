"""A cache of extracted features, keyed by what they were computed from.

A feature set is identified by

    key = sha256(extractor ‖ canonical JSON of settings ‖ patch store content_hash)

and lives in `ROOT/<extractor>/<key[:16]>/`:

- `features.npz`: `case_ids` (unicode) and one float32 `(N, d)` array per output (`values` for
  single-output extractors; e.g. `fc7`, `fc7_relu`, ... for VGG), plus the cases that failed
  (`failed_ids`, `failed_messages`); loaded with `allow_pickle=False`;
- `provenance.json`: extractor, settings, input hash, key, package versions, creation time,
  output shapes, failures;
- `partial/batch-<first index>.npz` while a computation runs: each finished batch is written
  atomically, so a killed run resumes from the batches already on disk.

`compute(case_ids) -> (n, d) array | {output: (n, d) array}` receives a batch of case ids and
loads what it needs from the patch store itself (`patch_store.slices(ids)` for 2D extractors,
`patch_store.volumes(ids)` for 3D ones); a multi-output extractor returns all its outputs from
one pass. A batch that raises is retried case by case: the failing cases are left out of
the feature set and listed in its provenance, the others go on.
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from tumorchar._io import save_npz_atomic, write_text_atomic
from tumorchar.lock import FolderLock
from tumorchar.progress import progress_bar
from tumorchar.provenance import canonical_json, json_default, package_versions, sha256_text  # noqa: F401 (canonical_json re-exported)

FEATURES_FILE = "features.npz"
PROVENANCE_FILE = "provenance.json"
PARTIAL_DIR = "partial"
SINGLE_OUTPUT = "values"
_RESERVED = {"case_ids", "failed_ids", "failed_messages"}

BatchResult = np.ndarray | Mapping[str, np.ndarray]
ComputeFn = Callable[[list[str]], BatchResult]


class PatchSource(Protocol):
    """What the feature store needs from a patch store (see docs/architecture.md)."""

    @property
    def case_ids(self) -> Sequence[str]: ...

    @property
    def content_hash(self) -> str: ...


@dataclass(frozen=True)
class FeatureSet:
    """Features of one extractor output: row i of `values` belongs to `case_ids[i]`."""

    values: np.ndarray  # float32 (N, d)
    case_ids: tuple[str, ...]
    provenance: dict[str, Any]

    @property
    def output(self) -> str:
        return self.provenance["output"]


def feature_key(extractor: str, settings: Mapping[str, Any], input_hash: str) -> str:
    """sha256 over the extractor name, its canonical settings and the input's content hash."""
    text = "\n".join([extractor, canonical_json(dict(settings)), input_hash])
    return sha256_text(text)


def _save_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    save_npz_atomic(path, arrays)


def _save_json(path: Path, value: Any) -> None:
    text = json.dumps(value, indent=2, sort_keys=True, default=json_default) + "\n"
    write_text_atomic(path, text)


def _as_outputs(result: BatchResult, n_cases: int, case_ids: Sequence[str]) -> dict[str, Any]:
    """Check a compute() result and turn it into {output: float32 (n, d)}."""
    outputs = dict(result) if isinstance(result, Mapping) else {SINGLE_OUTPUT: result}
    checked = {}
    for name, values in outputs.items():
        if name in _RESERVED or not name.isidentifier():
            raise ValueError(f"invalid output name {name!r}")
        values = np.asarray(values, dtype=np.float32)
        if values.ndim != 2 or values.shape[0] != n_cases:
            raise ValueError(
                f"compute returned shape {values.shape} for output {name!r} on cases "
                f"{list(case_ids)[:3]}...; expected ({n_cases}, d)"
            )
        checked[name] = values
    return checked


class FeatureStore:
    """Feature sets under one root folder, reused while extractor, settings and input agree."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def folder(self, extractor: str, key: str) -> Path:
        if not extractor or "/" in extractor or extractor.startswith("."):
            raise ValueError(f"invalid extractor name {extractor!r}")
        return self.root / extractor / key[:16]

    # -- public API -----------------------------------------------------------------------------

    def get_or_compute(
        self,
        extractor: str,
        settings: Mapping[str, Any],
        patch_store: PatchSource,
        compute: ComputeFn,
        batch_size: int = 32,
        progress: bool = True,
    ) -> FeatureSet:
        """The feature set of a single-output extractor, loaded if cached, computed if not."""
        outputs = self.get_or_compute_outputs(
            extractor, settings, patch_store, compute, batch_size, progress
        )
        if set(outputs) != {SINGLE_OUTPUT}:
            raise TypeError(
                f"{extractor} has outputs {sorted(outputs)}: use get_or_compute_outputs"
            )
        return outputs[SINGLE_OUTPUT]

    def get_or_compute_outputs(
        self,
        extractor: str,
        settings: Mapping[str, Any],
        patch_store: PatchSource,
        compute: ComputeFn,
        batch_size: int = 32,
        progress: bool = True,
    ) -> dict[str, FeatureSet]:
        """All outputs of an extractor ({name: FeatureSet}), loaded or computed in one pass."""
        if batch_size < 1:
            raise ValueError("batch_size must be ≥ 1")
        cached = self.load(extractor, settings, patch_store)
        if cached is not None:
            return cached
        key = feature_key(extractor, settings, patch_store.content_hash)
        folder = self.folder(extractor, key)
        case_ids = [str(case_id) for case_id in patch_store.case_ids]
        if not case_ids:
            raise ValueError(f"{extractor}: the patch store has no cases")
        with FolderLock(folder):  # one writer per feature set: a second run refuses
            return self._compute_and_save(
                extractor, settings, patch_store, compute, batch_size, progress, key, folder
            )

    def _compute_and_save(
        self, extractor, settings, patch_store, compute, batch_size, progress, key, folder
    ) -> dict[str, FeatureSet]:
        case_ids = [str(case_id) for case_id in patch_store.case_ids]
        outputs, done_ids, failures = self._compute_batches(
            folder, case_ids, compute, batch_size, progress, extractor
        )
        provenance = {
            "extractor": extractor,
            "settings": json.loads(canonical_json(dict(settings))),
            "input_hash": patch_store.content_hash,
            "input": {  # what the patch store says about itself, for reports
                "source": getattr(patch_store, "source", None),
                "is_phantom": getattr(patch_store, "is_phantom", None),
            },
            "key": key,
            "n_cases": len(done_ids),
            "outputs": {name: list(values.shape) for name, values in outputs.items()},
            "failures": failures,
            "versions": package_versions(),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "batch_size": batch_size,
        }
        arrays = {name: values for name, values in outputs.items()}
        arrays["case_ids"] = np.array(done_ids, dtype=str)
        arrays["failed_ids"] = np.array(list(failures), dtype=str)
        arrays["failed_messages"] = np.array(list(failures.values()), dtype=str)
        _save_npz(folder / FEATURES_FILE, arrays)
        _save_json(folder / PROVENANCE_FILE, provenance)
        shutil.rmtree(folder / PARTIAL_DIR, ignore_errors=True)
        return self.load(extractor, settings, patch_store)

    def load(
        self, extractor: str, settings: Mapping[str, Any], patch_store: PatchSource
    ) -> dict[str, FeatureSet] | None:
        """The cached outputs if a valid set exists for these inputs, else None."""
        key = feature_key(extractor, settings, patch_store.content_hash)
        folder = self.folder(extractor, key)
        try:
            outputs = load_feature_folder(folder)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):  # missing or damaged
            return None
        provenance = next(iter(outputs.values())).provenance
        expected = set(map(str, patch_store.case_ids))
        stored = set(next(iter(outputs.values())).case_ids) | set(provenance["failures"])
        if provenance.get("key") != key or stored != expected:
            return None
        return outputs

    # -- batches --------------------------------------------------------------------------------

    def _compute_batches(self, folder, case_ids, compute, batch_size, progress, extractor):
        partial = folder / PARTIAL_DIR
        partial.mkdir(parents=True, exist_ok=True)
        starts = range(0, len(case_ids), batch_size)
        parts, failures = [], {}
        with progress_bar(progress, len(case_ids), f"{extractor} features") as advance:
            for start in starts:
                batch = case_ids[start : start + batch_size]
                path = partial / f"batch-{start:07d}.npz"
                part = _read_batch(path, batch)
                if part is None:
                    part = _run_batch(compute, batch)
                    _save_npz(path, part)
                parts.append(part)
                failures.update(
                    zip(part["failed_ids"].tolist(), part["failed_messages"].tolist(), strict=True)
                )
                advance(len(batch))
        if not any(len(part["case_ids"]) for part in parts):
            shutil.rmtree(partial, ignore_errors=True)  # nothing worth resuming from
            examples = "; ".join(f"{c}: {m}" for c, m in list(failures.items())[:3])
            raise RuntimeError(
                f"{extractor}: feature extraction failed for every case ({examples})"
            )
        names = _output_names(parts)
        outputs = {name: _stack([p[name] for p in parts if name in p]) for name in names}
        done_ids = [case_id for p in parts for case_id in p["case_ids"].tolist()]
        return outputs, done_ids, failures


def _output_names(parts: list[dict[str, np.ndarray]]) -> list[str]:
    names: list[str] = []
    for part in parts:
        if len(part["case_ids"]):
            batch_names = sorted(set(part) - _RESERVED)
            if names and batch_names != names:
                raise ValueError(f"compute returned outputs {batch_names}, earlier {names}")
            names = batch_names
    return names


def _stack(blocks: list[np.ndarray]) -> np.ndarray:
    widths = {block.shape[1] for block in blocks if len(block)}
    if len(widths) > 1:
        raise ValueError(f"compute returned different feature dimensions {sorted(widths)}")
    return np.concatenate([block for block in blocks if len(block)]).astype(np.float32)


def _run_batch(compute: ComputeFn, batch: list[str]) -> dict[str, np.ndarray]:
    """compute() on a batch; if it raises, case by case, recording each failing case."""
    try:
        outputs = _as_outputs(compute(list(batch)), len(batch), batch)
        done, failed = list(batch), {}
    except Exception:
        outputs, done, failed = {}, [], {}
        rows: dict[str, list[np.ndarray]] = {}
        for case_id in batch:
            try:
                single = _as_outputs(compute([case_id]), 1, [case_id])
            except Exception as error:  # noqa: BLE001 - reported per case at the end
                failed[case_id] = f"{type(error).__name__}: {error}"
                continue
            done.append(case_id)
            for name, values in single.items():
                rows.setdefault(name, []).append(values)
        outputs = {name: np.concatenate(values) for name, values in rows.items()}
    return {
        **outputs,
        "case_ids": np.array(done, dtype=str),
        "failed_ids": np.array(list(failed), dtype=str),
        "failed_messages": np.array(list(failed.values()), dtype=str),
    }


def _read_batch(path: Path, batch: list[str]) -> dict[str, np.ndarray] | None:
    """A finished batch from a previous (killed) run, if it covers exactly these cases."""
    try:
        with np.load(path, allow_pickle=False) as data:
            part = {name: data[name] for name in data.files}
        covered = part["case_ids"].tolist() + part["failed_ids"].tolist()
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return None
    return part if sorted(covered) == sorted(batch) else None


class IncompleteFeaturesError(FileNotFoundError):
    """A feature set whose computation did not finish (only `partial/` batches exist)."""


def load_feature_folder(
    folder: str | os.PathLike, allow_incomplete: bool = False
) -> dict[str, FeatureSet]:
    """Read `features.npz` + `provenance.json` of one feature set: {output: FeatureSet}.

    A folder holding only the `partial/` batches of an interrupted computation is refused
    (`IncompleteFeaturesError`) unless `allow_incomplete=True` asks for its finished batches
    (their provenance then says `"complete": false`).
    """
    folder = Path(folder)
    if not (folder / FEATURES_FILE).is_file() and (folder / PARTIAL_DIR).is_dir():
        if allow_incomplete:
            return _load_partial(folder)
        n = len(list((folder / PARTIAL_DIR).glob("batch-*.npz")))
        raise IncompleteFeaturesError(
            f"feature set {folder} is incomplete: its computation was interrupted after {n} "
            "batch(es). Rerun the feature extraction to finish it, or allow an incomplete "
            "set (allow_incomplete=True) to use the finished batches only"
        )
    provenance = json.loads((folder / PROVENANCE_FILE).read_text())
    with np.load(folder / FEATURES_FILE, allow_pickle=False) as data:
        case_ids = tuple(data["case_ids"].tolist())
        sets = {}
        for name in provenance["outputs"]:
            values = data[name]
            if values.shape[0] != len(case_ids):
                raise ValueError(
                    f"{folder}: {name} has {values.shape[0]} rows for {len(case_ids)} cases"
                )
            sets[name] = FeatureSet(values, case_ids, {**provenance, "output": name})
    if not sets:
        raise ValueError(f"{folder}: no outputs")
    return sets


def _load_partial(folder: Path) -> dict[str, FeatureSet]:
    """The finished batches of an interrupted computation, as feature sets."""
    parts = []
    for path in sorted((folder / PARTIAL_DIR).glob("batch-*.npz")):
        with np.load(path, allow_pickle=False) as data:
            parts.append({name: data[name] for name in data.files})
    parts = [part for part in parts if len(part["case_ids"])]
    if not parts:
        raise IncompleteFeaturesError(f"feature set {folder} has no finished batch")
    case_ids = tuple(c for part in parts for c in part["case_ids"].tolist())
    failures = {
        c: m
        for part in parts
        for c, m in zip(part["failed_ids"].tolist(), part["failed_messages"].tolist(), strict=True)
    }
    provenance = {"complete": False, "n_cases": len(case_ids), "failures": failures}
    return {
        name: FeatureSet(_stack([p[name] for p in parts]), case_ids, {**provenance, "output": name})
        for name in _output_names(parts)
    }
