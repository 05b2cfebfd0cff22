"""`tumorchar reproduce`: the paper's experiments E1–E4 (`tumorchar.experiments.reproduce`)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from tumorchar.cli._common import (
    AllowRandomInit,
    Folds,
    I3DSetting,
    LungData,
    Network3D,
    Preset,
    Seed,
    fail,
)


def reproduce(
    out: Path = typer.Option(..., "--out", help="Output folder (stages are cached inside)."),
    data: LungData = typer.Option(
        LungData.phantom, "--data", help="Lung data when no --lidc-dir: phantom or none."
    ),
    lidc_dir: Path | None = typer.Option(
        None,
        "--lidc-dir",
        exists=True,
        file_okay=False,
        help="A TCIA-layout LIDC-IDRI download: real CT instead of phantom.",
    ),
    lidc_maxslice: Path | None = typer.Option(
        None,
        "--lidc-maxslice",
        exists=True,
        help="REAL CT: the LIDC max-slice crops (folder with nodules.csv and nodules.tar.xz): "
        "E1's 2D rows, E2, E3, E4 and the reference rows on them (dataset lung-maxslice).",
    ),
    mri: Path | None = typer.Option(
        None,
        "--mri",
        exists=True,
        file_okay=False,
        help="MRI folder with images/, rois.csv, labels.csv. Default: the synthetic "
        "pancreas-MRI generator (labelled synthetic).",
    ),
    no_mri: bool = typer.Option(False, "--no-mri", help="Skip the MRI experiments."),
    experiments: str = typer.Option("E1,E2,E3,E4", "--experiments", help="Which to run."),
    folds: Folds = 10,
    plain_split: bool = typer.Option(
        False,
        "--plain-split",
        help="The paper's plain stratified split instead of splitting by patient.",
    ),
    seed: Seed = 0,
    max_cases: int | None = typer.Option(
        None, "--max-cases", min=20, help="Stratified subset of lung nodules (quick runs)."
    ),
    mri_cases: int | None = typer.Option(
        None, "--mri-cases", min=20, help="Number of synthetic MRI subjects."
    ),
    mri_shape: str | None = typer.Option(
        None, "--mri-shape", help="Synthetic MRI volume size 'Z,Y,X' (default 30,256,256)."
    ),
    network_3d: Network3D = typer.Option(
        Network3D.i3d,
        "--network-3d",
        help="E1's 3D network: i3d (Kinetics-400; `tumorchar weights fetch`) or c3d "
        "(Sports-1M with --c3d-weights).",
    ),
    i3d_setting: I3DSetting = typer.Option(
        I3DSetting.cpu,
        "--i3d-setting",
        help="cpu: 16x64x64 clips, top block fine-tuned on a cached trunk; full (GPU): "
        "32x224x224 clips, every layer.",
    ),
    i3d_epochs: int | None = typer.Option(
        None,
        "--i3d-epochs",
        min=1,
        help="I3D fine-tuning epochs per fold (default: setting's).",
    ),
    allow_random_init: AllowRandomInit = False,
    c3d_preset: Preset = typer.Option(Preset.cpu, "--c3d-preset", help="cpu or paper (GPU)."),
    c3d_epochs: int = typer.Option(3, "--c3d-epochs", min=1, help="Fine-tuning epochs per fold."),
    c3d_weights: Path | None = typer.Option(
        None,
        "--c3d-weights",
        exists=True,
        dir_okay=False,
        help="Sports-1M C3D weights (c3d.pickle): E1's 3D rows use C3D.",
    ),
    vgg_weights: Path | None = typer.Option(
        None,
        "--vgg-weights",
        exists=True,
        dir_okay=False,
        help="ImageNet VGG16 state dict: VGG rows beside EfficientNet-Lite0 in E3/E4.",
    ),
    vgg_bf16: bool = typer.Option(
        False, "--vgg-bf16", help="VGG in bfloat16 autocast (faster on CPU, ~1 % feature error)."
    ),
    rf_trees: int = typer.Option(100, "--rf-trees", min=1, help="Trees of the random forests."),
    psvm_restarts: int = typer.Option(
        10, "--psvm-restarts", min=1, help="Random restarts of each ∝SVM fit."
    ),
) -> None:
    """Reproduce the paper's experiments E1–E4: cohort → patches → features → report."""
    from rich.console import Console
    from rich.table import Table

    from tumorchar.experiments.protocol import Protocol
    from tumorchar.experiments.report import headline_tables
    from tumorchar.experiments.reproduce import EXPERIMENTS, ReproduceSettings
    from tumorchar.experiments.reproduce import reproduce as run_reproduction

    console = Console()
    chosen = tuple(e.strip().upper() for e in experiments.split(",") if e.strip())
    unknown = sorted(set(chosen) - set(EXPERIMENTS))
    if unknown:
        fail(f"unknown experiment(s) {', '.join(unknown)}; choose from {', '.join(EXPERIMENTS)}")
    shape = None
    if mri_shape is not None:
        try:
            shape = tuple(int(v) for v in mri_shape.split(","))
        except ValueError:
            shape = ()
        if len(shape) != 3 or min(shape) < 8:
            fail(f"--mri-shape must be three sizes ≥ 8 like 30,256,256, got {mri_shape!r}")
    if data is LungData.none and lidc_dir is None and lidc_maxslice is None and no_mri:
        fail("nothing to run: --data none and --no-mri")
    settings = ReproduceSettings(
        out=out,
        lung="lidc" if lidc_dir is not None else data.value,
        lidc_dir=lidc_dir,
        lidc_maxslice=lidc_maxslice,
        mri="none" if no_mri else ("dir" if mri is not None else "synthetic"),
        mri_dir=mri,
        protocol=Protocol(n_splits=folds, by_patient=not plain_split, seed=seed),
        experiments=chosen,
        max_cases=max_cases,
        mri_cases=mri_cases,
        mri_shape=shape,
        network3d=network_3d.value,
        i3d_setting=i3d_setting.value,
        i3d_epochs=i3d_epochs,
        allow_random_init=allow_random_init,
        c3d_preset=c3d_preset.value,
        c3d_epochs=c3d_epochs,
        c3d_weights=c3d_weights,
        vgg_weights=vgg_weights,
        vgg_bf16=vgg_bf16,
        rf_trees=rf_trees,
        psvm_restarts=psvm_restarts,
        seed=seed,
    )
    try:
        report = run_reproduction(settings, console=console)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        fail(str(exc))
    for title, table in headline_tables(out):
        shown = Table(title=title)
        for column in table.header:
            shown.add_column(column, overflow="fold")
        for row in table.rows:
            shown.add_row(*(escape(str(cell)) for cell in row))
        console.print(shown)
    console.print(f"report: {report} and {report.with_suffix('.html')}", markup=False)


def register(app: typer.Typer) -> None:
    app.command()(reproduce)
