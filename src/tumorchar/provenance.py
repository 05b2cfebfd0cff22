"""Provenance, defined once: canonical JSON, digests, file content hashes, package versions.

Every cache key in tumorchar is `digest(...)` of canonical JSON, so equal settings give equal
keys whichever module computes them (``4`` and ``4.0`` are different JSON, so recipes write
their settings once, in `tumorchar.features.recipes`).
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import os
import platform
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

#: Packages whose versions shape the numbers (features, models, experiments, bundles).
VERSIONED_PACKAGES = (
    "tumorchar",
    "numpy",
    "scipy",
    "scikit-learn",
    "imbalanced-learn",
    "torch",
)


def json_default(value: Any) -> Any:
    """JSON form of the non-JSON values that settings hold (NumPy scalars and arrays,
    paths, enums, dataclasses, sets)."""
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise TypeError(f"value {value!r} of type {type(value).__name__} is not JSON serialisable")


def canonical_json(value: Any, *, indent: int | None = None) -> str:
    """JSON with sorted keys, ASCII only and no NaN: equal values give equal text.

    Without ``indent`` the text is compact (``","`` and ``":"`` separators), the form keys are
    computed on; bundle manifests are written and digested with ``indent=2``.
    """
    separators = (",", ":") if indent is None else (",", ": ")
    return json.dumps(
        value,
        sort_keys=True,
        separators=separators,
        indent=indent,
        ensure_ascii=True,
        allow_nan=False,
        default=json_default,
    )


def sha256_text(text: str | bytes) -> str:
    """Hex SHA-256 of a string (UTF-8) or of bytes."""
    return hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()


def digest(value: Any) -> str:
    """Hex SHA-256 of ``value``'s canonical JSON: the key of a setting, a stage, a run."""
    return sha256_text(canonical_json(value))


def short_digest(value: Any, length: int = 16) -> str:
    """The first ``length`` hex digits of `digest` (results' ``settings_hash`` column)."""
    return digest(value)[:length]


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes (read in chunks: weights files are large)."""
    hasher = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            hasher.update(block)
    return hasher.hexdigest()


def lines_sha256(items: Iterable[str]) -> str:
    """Hex SHA-256 of the items joined by newlines (a list of case ids)."""
    return sha256_text("\n".join(items))


def state_dict_sha256(state: Mapping[str, Any]) -> str:
    """Hex SHA-256 over a network's named tensors (names sorted, raw bytes): the content of
    its weights, whatever file they came from."""
    import torch

    hasher = hashlib.sha256()
    for name, tensor in sorted(state.items()):
        hasher.update(name.encode())
        flat = tensor.detach().cpu().contiguous().view(-1)
        hasher.update(flat.view(torch.uint8).numpy().tobytes())
    return hasher.hexdigest()


def package_versions(packages: Iterable[str] = VERSIONED_PACKAGES) -> dict[str, str]:
    """Versions of Python and of ``packages`` ("unknown" for one that is not installed)."""
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            if name == "tumorchar":
                from tumorchar import __version__

                versions[name] = __version__
            else:
                versions[name] = "unknown"
    return versions


def path_or_none(path: str | os.PathLike | None) -> str | None:
    """A path as text for a record, or None."""
    return None if path is None else str(Path(path))
