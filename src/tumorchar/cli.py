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



# --- features (issue 4) -----------------------------------------------------------------------



# --- reproduce (issue 7) ----------------------------------------------------------------------



# --- train / predict (issue 8) ----------------------------------------------------------------

train_app = typer.Typer(
    help="Fit a model on every case of a patch store and save it as a model bundle.",
    no_args_is_help=True,
)
app.add_typer(train_app, name="train")


def _train_log(message: str) -> None:
    from rich.console import Console

    Console(stderr=True).print(f"[dim]train:[/] {message}")


def _run_training(train, *args, **kwargs) -> None:
    from tumorchar.bundle.format import BundleError
    from tumorchar.bundle.train import TrainingError

    try:
        path = train(*args, log=_train_log, **kwargs)
    except (TrainingError, BundleError, ValueError) as error:
        fail(str(error))
    typer.echo(f"model bundle: {path}")


@train_app.command("mtl")
def train_mtl_command(
    patches: Path = typer.Option(..., "--patches", help="Patch store folder (CT)."),
    out: Path = typer.Option(..., "--out", help="Model bundle folder to create."),
    preset: str = typer.Option("cpu", help="C3D preset: cpu (minutes on CPU) or paper (GPU)."),
    epochs: int = typer.Option(3, help="C3D fine-tuning epochs."),
    rho1: float = typer.Option(1.0, help="Task-graph penalty ρ1 of Eq. 6."),
    rho2: float = typer.Option(10.0, help="Sparsity penalty ρ2 of Eq. 6."),
    sports1m: Path | None = typer.Option(None, help="Sports-1M C3D weights (paper preset)."),
    device: str | None = typer.Option(None, help="Fine-tuning device (default: CUDA if any)."),
    folds: int = typer.Option(5, help="Folds of the internal cross-validation."),
    seed: int = typer.Option(0, help="Seed of every random choice."),
    overwrite: bool = typer.Option(False, help="Replace an existing bundle at --out."),
) -> None:
    """Supervised model: C3D fine-tuned on 7 tasks → fc6 → graph-regularized sparse MTL."""
    from tumorchar.bundle.train import train_mtl

    options = {"preset": preset, "epochs": epochs, "rho1": rho1, "rho2": rho2}
    options |= {"sports1m": sports1m, "device": device, "n_folds": folds, "seed": seed}
    _run_training(train_mtl, patches, out, overwrite=overwrite, progress=True, **options)


@train_app.command("unsupervised")
def train_unsupervised_command(
    patches: Path = typer.Option(..., "--patches", help="Patch store folder (CT or MRI)."),
    out: Path = typer.Option(..., "--out", help="Model bundle folder to create."),
    folds: int = typer.Option(5, help="Folds of the internal cross-validation."),
    seed: int = typer.Option(0, help="Seed of every random choice."),
    overwrite: bool = typer.Option(False, help="Replace an existing bundle at --out."),
) -> None:
    """Unsupervised model: GIST → k-means (k = 2) → label proportions → ∝SVM."""
    from tumorchar.bundle.train import train_unsupervised

    _run_training(train_unsupervised, patches, out, n_folds=folds, seed=seed, overwrite=overwrite)


def _parse_point(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.replace(" ", "").split(","))
    except ValueError:
        values = ()
    if len(values) != 3:
        raise typer.BadParameter(f"expected X,Y,Z (three numbers), got {text!r}")
    return values  # type: ignore[return-value]


@app.command()
def predict(
    model: Path = typer.Option(..., "--model", help="Model bundle folder (tumorchar train)."),
    scan: Path | None = typer.Option(
        None, "--scan", help="DICOM series folder or file, NIfTI or NRRD."
    ),
    at: str | None = typer.Option(None, "--at", help="Region centre X,Y,Z."),
    units: str = typer.Option("mm", help="Units of --at: mm (world) or voxel (column,row,slice)."),
    mask: Path | None = typer.Option(None, "--mask", help="Mask file on the scan's grid."),
    batch: Path | None = typer.Option(
        None, "--batch", help="CSV with columns scan and x,y,z [units] or mask [, case_id]."
    ),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the result(s) here."),
    modality: str | None = typer.Option(None, help="Override the scan's modality (ct, mri)."),
) -> None:
    """Characterize a region of a new scan with a trained model bundle."""
    from tumorchar.bundle.cli_predict import predict_batch, predict_one

    if batch is not None:
        if scan is not None or at is not None or mask is not None:
            fail("--batch takes its scans and regions from the CSV; drop --scan/--at/--mask")
        predict_batch(model, batch, json_out, fail)
        return
    if scan is None or (at is None) == (mask is None):
        fail("give --scan and exactly one of --at X,Y,Z or --mask FILE (or --batch CSV)")
    point = _parse_point(at) if at is not None else None
    predict_one(model, scan, point, units, mask, json_out, modality, fail)


if __name__ == "__main__":  # pragma: no cover
    app()
