"""One writer per output folder: a lock file naming its holder.

`FolderLock(folder)` creates `folder/.tumorchar.lock` holding the holder's pid, the start
time of that process (so that a recycled pid is not mistaken for the holder), the host and
the UTC time the lock was taken, and keeps an exclusive `flock` on it while held. A second
run that finds the lock held by a live process refuses to start (`FolderLockedError`, the
message names the holder). A lock left by a process that died is taken over: the kernel
drops a dead process's `flock` (on a file system without `flock`, the recorded pid and
start time decide whether the holder still runs).

The lock is re-entrant within a process (a command that locks its output folder may call
library writers that lock it again) and is released, and its file removed, when the last
holder releases it. Outputs that are replaced as a whole (a bundle folder, a JSON file) are
locked with `FolderLock.beside(path)`: `.<name>.tumorchar.lock` in the parent folder.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from datetime import UTC, datetime
from pathlib import Path

from tumorchar.errors import TumorcharError

LOCK_NAME = ".tumorchar.lock"
_HELD: dict[str, list] = {}  # resolved lock path → [file descriptor, depth]
_GUARD = threading.Lock()


class FolderLockedError(TumorcharError):
    """Another live run writes this output folder."""


def process_start(pid: int) -> str | None:
    """The start time of process `pid` in clock ticks after boot (Linux), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # field 22; the command name (field 2) is in parentheses and may contain spaces
    return stat.rsplit(")", 1)[1].split()[19]


def _alive(record: dict) -> bool:
    """Whether the process that wrote `record` still runs (same pid and start time)."""
    pid = record.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    if record.get("host") not in (None, socket.gethostname()):
        return True  # another machine's process: cannot be checked, assume it runs
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    started = record.get("process_start")
    return started is None or process_start(pid) in (None, started)


class FolderLock:
    """Exclusive lock on an output folder (see the module docstring)."""

    def __init__(self, folder: str | os.PathLike, name: str = LOCK_NAME):
        self.folder = Path(folder)
        self.path = self.folder / name
        self._held = False

    @classmethod
    def beside(cls, target: str | os.PathLike) -> FolderLock:
        """A lock for an output replaced as a whole: a file next to it in its parent."""
        target = Path(target)
        return cls(target.parent, f".{target.name}{LOCK_NAME}")

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> FolderLock:
        """Take the lock or raise `FolderLockedError`; a stale lock is taken over."""
        import fcntl

        if self._held:
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        key = str(self.path.resolve())
        with _GUARD:
            if key in _HELD:
                _HELD[key][1] += 1
                self._held = True
                return self
            while True:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    record = self._record(fd)
                    os.close(fd)
                    raise FolderLockedError(self._message(record)) from None
                except OSError:  # no flock on this file system: trust the record
                    record = self._record(fd)
                    if record and _alive(record):
                        os.close(fd)
                        raise FolderLockedError(self._message(record)) from None
                # the file may have been removed by its releasing holder after we opened it
                try:
                    same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
                except FileNotFoundError:
                    same = False
                if same:
                    break
                os.close(fd)
            self._write_record(fd)
            _HELD[key] = [fd, 1]
            self._held = True
        return self

    def release(self) -> None:
        """Release the lock; the last holder of this process removes the file."""
        if not self._held:
            return
        key = str(self.path.resolve())
        with _GUARD:
            self._held = False
            entry = _HELD.get(key)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] > 0:
                return
            del _HELD[key]
            self.path.unlink(missing_ok=True)  # while still locked: nobody holds it next
            os.close(entry[0])

    @staticmethod
    def _record(fd: int) -> dict:
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            record = json.loads(os.read(fd, 4096).decode() or "{}")
        except (OSError, ValueError):
            return {}
        return record if isinstance(record, dict) else {}

    def _write_record(self, fd: int) -> None:
        record = {
            "pid": os.getpid(),
            "process_start": process_start(os.getpid()),
            "host": socket.gethostname(),
            "locked_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(record) + "\n").encode())

    def _message(self, record: dict) -> str:
        holder = f"process {record.get('pid', '?')}"
        if record.get("host") and record["host"] != socket.gethostname():
            holder += f" on {record['host']}"
        since = f" since {record['locked_utc']}" if record.get("locked_utc") else ""
        return (
            f"{self.folder} is being written by another tumorchar run ({holder}{since}); "
            "wait for it to finish or choose another output folder"
        )
