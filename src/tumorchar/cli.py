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



# --- patches (issue 3) ------------------------------------------------------------------------

patches_app = typer.Typer(
    help="Build patch stores: LIDC crops, the annotation-driven CT phantom, pancreas MRI ROIs.",
    no_args_is_help=True,
)
app.add_typer(patches_app, name="patches")


def _finish_batch(report, out: Path, note: str = "") -> None:
    """Print the batch summary and its failures; exit 1 when a case failed."""
    from rich.console import Console

    console = Console()
    if note:
        console.print(f"[bold yellow]{note}[/]", soft_wrap=True)
    console.print(
        f"patch store {out}: {len(report.written)} written, {len(report.skipped)} already "
        f"there, {len(report.failures)} failed",
        soft_wrap=True,
    )
    if report.failures:
        err = Console(stderr=True)
        err.print("[bold red]failed cases:[/]")
        for message in report.failures.values():
            err.print(f"  - {message}", soft_wrap=True, markup=False)
        raise typer.Exit(1)


def _run_store_build(build, *args, **kwargs):
    from tumorchar.data.patches import StoreMismatchError

    try:
        return build(*args, **kwargs)
    except (FileNotFoundError, StoreMismatchError, ValueError) as error:
        fail(str(error))


@patches_app.command("lidc")
def patches_lidc(
    cohort: Path = typer.Option(..., "--cohort", help="Cohort folder (tumorchar cohort)."),
    lidc_dir: Path = typer.Option(..., "--lidc-dir", help="LIDC-IDRI download (TCIA layout)."),
    out: Path = typer.Option(..., "--out", help="Patch store folder to write or resume."),
    spacing: float = typer.Option(0.5, help="Isotropic voxel size (mm)."),
    size_mm: float = typer.Option(32.0, "--size-mm", help="Side of the cubic patch (mm)."),
) -> None:
    """Crop each cohort nodule from its LIDC scan (HU, isotropic, air-padded at borders)."""
    from tumorchar.data.ct_patches import PatchGeometry, build_lidc_store

    report = _run_store_build(
        build_lidc_store, cohort, lidc_dir, out, PatchGeometry(spacing, size_mm)
    )
    _finish_batch(report, out)


@patches_app.command("phantom")
def patches_phantom(
    cohort: Path = typer.Option(..., "--cohort", help="Cohort folder (tumorchar cohort)."),
    out: Path = typer.Option(..., "--out", help="Patch store folder to write or resume."),
    seed: int = typer.Option(0, help="Seed of the phantom's noise, vessels and patterns."),
    spacing: float = typer.Option(0.5, help="Isotropic voxel size (mm)."),
    size_mm: float = typer.Option(32.0, "--size-mm", help="Side of the cubic patch (mm)."),
    workers: int = typer.Option(2, help="Cases rendered in parallel (threads)."),
) -> None:
    """Render CT-like phantom patches from the cohort's real masks and mean ratings."""
    from tumorchar.data.ct_patches import PatchGeometry, build_phantom_store
    from tumorchar.data.phantom import PHANTOM_NOTE

    report = _run_store_build(
        build_phantom_store,
        cohort,
        out,
        seed=seed,
        geometry=PatchGeometry(spacing, size_mm),
        workers=workers,
    )
    _finish_batch(report, out, note=PHANTOM_NOTE)


@patches_app.command("mri")
def patches_mri(
    images: Path = typer.Option(..., "--images", help="Folder of <case_id>.nii.gz / DICOM."),
    rois: Path = typer.Option(..., "--rois", help="CSV: case_id + mask path or box z0..x1."),
    labels: Path = typer.Option(..., "--labels", help="CSV: case_id, label (normal | ipmn)."),
    out: Path = typer.Option(..., "--out", help="Patch store folder to write or resume."),
    roi_size: int = typer.Option(128, "--roi-size", help="Pixels per side of each ROI slice."),
) -> None:
    """N4 + curvature anisotropic diffusion, then the ROI's axial slices of each case."""
    from tumorchar.data.mri import MRISettings, build_mri_store

    for path in (images, rois, labels):
        if not path.exists():
            fail(f"{path} does not exist")
    report = _run_store_build(
        build_mri_store, images, rois, labels, out, MRISettings(roi_size=roi_size)
    )
    _finish_batch(report, out)


@patches_app.command("synthetic-mri")
def patches_synthetic_mri(
    out: Path = typer.Option(..., "--out", help="Folder for the images, rois.csv, labels.csv."),
    n_cases: int = typer.Option(12, "--n-cases", min=1, help="Number of cases."),
    seed: int = typer.Option(0, help="Seed."),
    ipmn_fraction: float = typer.Option(0.78, "--ipmn-fraction", min=0.0, max=1.0),
    roi: str = typer.Option("box", help="ROI kind written to rois.csv: box or mask."),
    matrix: int = typer.Option(256, min=32, help="In-plane pixels per side."),
    slices: int = typer.Option(30, min=4, help="Axial slices per volume."),
) -> None:
    """Write SYNTHETIC pancreas T2 MRI cases (for tests and the demo of the MRI path)."""
    from tumorchar.data.synthetic_mri import SYNTHETIC_NOTE, write_synthetic_mri

    if roi not in ("box", "mask"):
        fail("--roi must be 'box' or 'mask'")
    write_synthetic_mri(
        out,
        n_cases=n_cases,
        seed=seed,
        ipmn_fraction=ipmn_fraction,
        shape=(slices, matrix, matrix),
        roi=roi,
    )
    typer.echo(f"{SYNTHETIC_NOTE}\n{n_cases} cases written to {out}")




# --- features (issue 4) -----------------------------------------------------------------------



# --- reproduce (issue 7) ----------------------------------------------------------------------



# --- train / predict (issue 8) ----------------------------------------------------------------



if __name__ == "__main__":  # pragma: no cover
    app()
