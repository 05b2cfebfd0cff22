"""Build (or reuse) a cohort folder: the library function behind `tumorchar cohort` and the
cohort stage of `reproduce`.

The folder is reused while its database's SHA-256 and the settings are unchanged; ``force``
rebuilds it. The old provenance file is removed before anything is rewritten, so a crash
mid-write never leaves it vouching for files built with other settings.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tumorchar.data import lidc
from tumorchar.data.cohort_store import write_cohort
from tumorchar.progress import progress_bar
from tumorchar.provenance import file_sha256


@dataclass(frozen=True)
class CohortResult:
    """Where the cohort is, its summary (counts, failures) and whether it was reused."""

    folder: Path
    summary: dict
    reused: bool
    database: Path
    database_sha256: str


def cohort_settings(min_reads: int = 3, tolerance: float | None = None) -> dict:
    return {"min_reads": int(min_reads), "tolerance": tolerance}


def build_cohort_folder(
    out: str | os.PathLike,
    db: str | os.PathLike | None = None,
    min_reads: int = 3,
    tolerance: float | None = None,
    force: bool = False,
    progress: bool = True,
    status: Callable[[str], object] | None = None,
) -> CohortResult:
    """Write ``cohort.parquet``, ``masks.npz`` and ``cohort.json`` into ``out`` (or reuse
    them). Raises `DatabaseError` for a missing, corrupt or foreign database and `OSError`
    when the folder cannot be written. ``status(message)`` hears what is being read."""
    from tumorchar.lock import FolderLock

    out = Path(out)
    with FolderLock(out):  # one writer per output folder: a second run refuses
        return _build(out, db, min_reads, tolerance, force, progress, status)


def _build(out: Path, db, min_reads, tolerance, force, progress, status) -> CohortResult:
    from tumorchar import __version__

    path = lidc.locate_database(db)
    settings = cohort_settings(min_reads, tolerance)
    db_hash = file_sha256(path)
    previous = lidc.read_provenance(out)
    if (
        not force
        and previous
        and previous.get("database_sha256") == db_hash
        and previous.get("settings") == settings
    ):
        return CohortResult(out, previous["summary"], True, path, db_hash)
    if status is not None:
        status(f"reading {path.name}")
    scans = lidc.read_database(path)
    with progress_bar(progress, len(scans), "grouping and masking") as advance:
        build = lidc.build_cohort(scans, min_reads, tolerance, progress=lambda _: advance())
    summary = lidc.summarize(build, min_reads)
    (out / lidc.PROVENANCE_NAME).unlink(missing_ok=True)
    write_cohort(build.table, build.masks, out)
    lidc.write_provenance(
        out,
        {
            "database": path.name,
            "database_sha256": db_hash,
            "settings": settings,
            "summary": summary,
            "tumorchar_version": __version__,
        },
    )
    return CohortResult(out, summary, False, path, db_hash)
