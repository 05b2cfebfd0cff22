"""`tumorchar train mtl|unsupervised`: fit a model recipe on a whole patch store and save it
as a bundle (`tumorchar.bundle.train`)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from tumorchar.cli._common import (
    AllowIncomplete,
    AllowRandomInit,
    I3DSetting,
    Overwrite,
    Preset,
    Seed,
    fail,
)


class MtlFeatures(StrEnum):
    auto = "auto"
    i3d = "i3d"
    c3d = "c3d"
    gist = "gist"


train_app = typer.Typer(
    help="Fit a model on every case of a patch store and save it as a model bundle.",
    no_args_is_help=True,
)

BundleOut = Annotated[Path, typer.Option("--out", help="Model bundle folder to create.")]
InternalFolds = Annotated[
    int, typer.Option("--folds", min=2, help="Folds of the internal cross-validation.")
]


def _log(message: str) -> None:
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True).print(f"[dim]train:[/] {escape(message)}")


def _run(train, *args, **kwargs) -> None:
    try:
        path = train(*args, log=_log, **kwargs)
    except ValueError as error:  # TrainingError, BundleError and bad stores
        fail(str(error))
    typer.echo(f"model bundle: {path}")


@train_app.command("mtl")
def train_mtl_command(
    patches: Annotated[
        Path,
        typer.Option("--patches", exists=True, file_okay=False, help="Patch store folder (CT)."),
    ],
    out: BundleOut,
    allow_incomplete: AllowIncomplete = False,
    preset: Preset = typer.Option(
        Preset.cpu, help="C3D preset: cpu (minutes on CPU) or paper (GPU)."
    ),
    i3d_setting: I3DSetting = typer.Option(
        I3DSetting.cpu,
        "--i3d-setting",
        help="I3D: cpu (16x64x64 clips, top block fine-tuned) or full (GPU: 32x224x224, "
        "every layer).",
    ),
    epochs: int | None = typer.Option(
        None, min=1, help="Fine-tuning epochs (default: I3D the setting's, C3D 3)."
    ),
    rho1: float | None = typer.Option(
        None,
        help="Fixed task-graph penalty ρ1 of Eq. 6 (summed loss; the paper: 1). "
        "Default: ρ1 and ρ2 chosen by inner CV grouped by patient, as E1's proposed row.",
    ),
    rho2: float | None = typer.Option(
        None, help="Fixed sparsity penalty ρ2 of Eq. 6 (summed loss; the paper: 10)."
    ),
    weights: Path | None = typer.Option(
        None,
        "--weights",
        "--sports1m",
        exists=True,
        dir_okay=False,
        help="Sports-1M C3D weights (paper preset).",
    ),
    allow_random_init: AllowRandomInit = False,
    device: str | None = typer.Option(None, help="Fine-tuning device (default: CUDA if any)."),
    folds: InternalFolds = 5,
    seed: Seed = 0,
    overwrite: Overwrite = False,
    features: MtlFeatures = typer.Option(
        MtlFeatures.auto,
        help="Features: i3d (Kinetics-400, fine-tuned; 3D stores), c3d (fine-tuned; 3D "
        "stores), gist (2D), auto (i3d on a 3D store, gist on a 2D store such as the LIDC "
        "max-slice crops).",
    ),
) -> None:
    """Supervised model: features (I3D, Kinetics-400, fine-tuned on 7 tasks → pooled
    Mixed_5c on a 3D store; GIST on a 2D store) → the proposed graph-regularized sparse MTL,
    exactly the recipe E1's proposed row evaluates. I3D needs `tumorchar weights fetch`."""
    from tumorchar.bundle.train import train_mtl

    options = {"preset": preset.value, "epochs": epochs, "rho1": rho1, "rho2": rho2}
    options |= {"features": features.value, "i3d_setting": i3d_setting.value}
    options["allow_random_init"] = allow_random_init
    options |= {"sports1m": weights, "device": device, "n_folds": folds, "seed": seed}
    options |= {"allow_incomplete": allow_incomplete}
    _run(train_mtl, patches, out, overwrite=overwrite, progress=True, **options)


@train_app.command("unsupervised")
def train_unsupervised_command(
    patches: Annotated[
        Path,
        typer.Option(
            "--patches", exists=True, file_okay=False, help="Patch store folder (CT or MRI)."
        ),
    ],
    out: BundleOut,
    allow_incomplete: AllowIncomplete = False,
    folds: InternalFolds = 5,
    seed: Seed = 0,
    overwrite: Overwrite = False,
) -> None:
    """Unsupervised model: GIST → k-means (k = 2) → label proportions → ∝SVM."""
    from tumorchar.bundle.train import train_unsupervised

    _run(
        train_unsupervised,
        patches,
        out,
        n_folds=folds,
        seed=seed,
        overwrite=overwrite,
        allow_incomplete=allow_incomplete,
    )


def register(app: typer.Typer) -> None:
    app.add_typer(train_app, name="train")
