"""Atomic writes, defined once.

A file is written to a temporary file in the same folder (so the rename cannot cross file
systems) whose name holds the process id and a random token (so concurrent runs never share
a temporary name), flushed and fsync'ed, then moved into place with `os.replace`. On any
failure, the temporary file is removed and the target is left as it was.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TMP_MARK = ".tmp-"


def temporary_name(path: Path, suffix: str = "") -> Path:
    """A unique temporary path beside ``path`` (hidden, pid + random token)."""
    token = f"{os.getpid()}-{secrets.token_hex(4)}"
    return path.with_name(f".{path.name}{TMP_MARK}{token}{suffix}")


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path to write ``path`` through; on a normal exit it is fsync'ed and
    renamed onto ``path``, on an exception it is removed. ``suffix`` ends the temporary name
    (for writers that choose the format from it, e.g. ``".npz"``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path, suffix)
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, path)
    except OSError as error:  # full disk, read-only folder, a folder at `path`...
        tmp.unlink(missing_ok=True)
        if str(tmp) in (str(error.filename), str(error.filename2)):
            # name what the user asked to write, not the temporary
            raise OSError(error.errno, error.strerror, str(path)) from error
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: str | os.PathLike, write: Callable[[Any], None], mode: str = "wb") -> Path:
    """Open a temporary file with ``mode``, let ``write(handle)`` fill it, then rename it."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, mode) as handle:
        write(handle)
        handle.flush()
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    return write_atomic(path, lambda handle: handle.write(text), mode="w")


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    return write_atomic(path, lambda handle: handle.write(data))


def write_json_atomic(
    path: str | os.PathLike, payload: Any, *, allow_nan: bool = True, default=str
) -> Path:
    """Indented JSON with sorted keys. ``default`` turns other values into JSON (``str``)."""
    text = json.dumps(payload, indent=2, sort_keys=True, allow_nan=allow_nan, default=default)
    return write_text_atomic(path, text + "\n")


def save_npz_atomic(path: str | os.PathLike, arrays: Mapping[str, Any]) -> Path:
    """`np.savez` (uncompressed, no pickle needed to read it back) through a temporary file."""
    import numpy as np

    return write_atomic(path, lambda handle: np.savez(handle, **arrays))


def write_parquet_atomic(frame, path: str | os.PathLike) -> Path:
    """A DataFrame as Parquet (no index) through a temporary file."""
    path = Path(path)
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files an interrupted run left in ``folder`` (their writer's
    process is gone; a live writer's temporaries are left alone). Returns what was removed."""
    removed = []
    for path in Path(folder).glob(f".*{TMP_MARK}*"):
        pid = path.name.split(TMP_MARK, 1)[1].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed
