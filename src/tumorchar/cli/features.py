"""`tumorchar features gist|vgg|c3d`: one feature recipe (`tumorchar.features.recipes`) over a
patch store, into a feature store (cached, resumable)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tumorchar.cli._common import (
    AllowIncomplete,
    AllowRandomInit,
    PatchesIn,
    Preset,
    Seed,
    WeightsFile,
    fail,
)

features_app = typer.Typer(
    help="Extract features from a patch store into a feature folder (cached, resumable).",
    no_args_is_help=True,
)

FeaturesOut = Annotated[Path, typer.Option("--out", help="Feature store folder (created).")]


def _open_patch_store(folder: Path, allow_incomplete: bool = False):
    from tumorchar.data.patches import PatchStore

    try:
        return PatchStore(folder, allow_incomplete=allow_incomplete)
    except (FileNotFoundError, ValueError, KeyError) as error:
        fail(f"cannot open the patch store {folder}: {error}")


def _now() -> str:
    """The current UTC time as the feature store writes it (seconds)."""
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat(timespec="seconds")


def _run(recipe, patches_store, out: Path) -> None:
    """Compute (or reuse) the recipe's features and report where they are."""
    from tumorchar.features.store import FeatureStore

    started = _now()
    sets = recipe.run(FeatureStore(out), patches_store)
    _report(sets, out, started)


def _report(sets: dict, out: Path, started: str) -> None:
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
    from rich.markup import escape

    console.print(
        f"[green]{escape(prov['extractor'])}[/]: {len(first.case_ids)} cases, {sizes} "
        f"{' '.join(labels)}\n  {escape(str(folder))}"
    )
    if prov["failures"]:
        console.print(f"[bold red]{len(prov['failures'])} case(s) failed:[/]")
        for case_id, message in prov["failures"].items():
            console.print(f"  {case_id}: {message}", markup=False, highlight=False)


@features_app.command("gist")
def features_gist(
    patches: PatchesIn,
    out: FeaturesOut,
    allow_incomplete: AllowIncomplete = False,
    image_size: int = typer.Option(128, help="Side of the square the slices are resized to."),
    orientations: str = typer.Option("8,8,8,8", help="Orientations per scale."),
    n_blocks: int = typer.Option(4, help="Responses averaged on an n × n grid."),
    fc_prefilt: float = typer.Option(4.0, help="Prefilter cut-off, cycles per image."),
    batch_size: int = typer.Option(64, min=1, help="Slices per saved batch."),
) -> None:
    """GIST descriptors (LMgist) of the central 2D slices."""
    from tumorchar.cli._common import parse_ints
    from tumorchar.features.recipes import gist_recipe

    orients = parse_ints(orientations, "--orientations")
    store = _open_patch_store(patches, allow_incomplete)
    try:
        recipe = gist_recipe(
            store,
            image_size=image_size,
            orientations=orients,
            n_blocks=n_blocks,
            fc_prefilt=fc_prefilt,
            batch_size=batch_size,
        )
    except ValueError as error:
        fail(str(error))
    _run(recipe, store, out)


@features_app.command("vgg")
def features_vgg(
    patches: PatchesIn,
    out: FeaturesOut,
    allow_incomplete: AllowIncomplete = False,
    weights: WeightsFile = None,
    allow_random_init: AllowRandomInit = False,
    seed: Seed = 0,
    batch_size: int = typer.Option(32, min=1, help="Slices per saved batch."),
) -> None:
    """VGG16 fc7 / fc8 features (with and without ReLU) of the central 2D slices
    (--weights: a torchvision-format VGG16 state dict, .pth or .safetensors)."""
    from tumorchar.features.recipes import vgg_recipe

    store = _open_patch_store(patches, allow_incomplete)
    try:
        recipe = vgg_recipe(
            store,
            weights=weights,
            allow_random_init=allow_random_init,
            seed=seed,
            batch_size=batch_size,
        )
    except (FileNotFoundError, ValueError, KeyError, RuntimeError) as error:
        fail(str(error))
    _run(recipe, store, out)


@features_app.command("c3d")
def features_c3d(
    patches: PatchesIn,
    out: FeaturesOut,
    allow_incomplete: AllowIncomplete = False,
    weights: WeightsFile = None,
    preset: Preset = typer.Option(Preset.cpu, help="Network preset: cpu (small) or paper."),
    allow_random_init: AllowRandomInit = False,
    seed: Seed = 0,
    batch_size: int = typer.Option(16, min=1, help="Volumes per saved batch."),
) -> None:
    """C3D fc6 features of the 3D volumes (--weights: the Sports-1M c3d.pickle of the
    PyTorch port)."""
    from tumorchar.features.recipes import c3d_recipe

    store = _open_patch_store(patches, allow_incomplete)
    try:
        recipe = c3d_recipe(
            store,
            preset=preset.value,
            weights=weights,
            allow_random_init=allow_random_init,
            seed=seed,
            batch_size=batch_size,
        )
    except (FileNotFoundError, ValueError) as error:
        fail(f"{error}\nTo extract features from a random network, pass --allow-random-init.")
    _run(recipe, store, out)


def register(app: typer.Typer) -> None:
    app.add_typer(features_app, name="features")
