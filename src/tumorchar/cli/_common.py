"""What every command shares: error exit, option types, choices, batch summaries."""

from __future__ import annotations

import functools
from enum import StrEnum
from pathlib import Path
from typing import Annotated, NoReturn

import typer


def fail(message: str, code: int = 2) -> NoReturn:
    """Print an error in red on stderr and exit with ``code`` (2: bad input, 1: a batch with
    failed cases)."""
    from rich.console import Console
    from rich.markup import escape

    # the message carries user text (paths, case ids): escaped, so "[/x]" prints as it is
    Console(stderr=True).print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code)


def environment_message(error: OSError) -> str:
    """One line naming the path and the cause of an OS error (read-only folder, full disk,
    a folder where a file is expected...); for a rename, the target, not the temporary."""
    path = error.filename2 or error.filename
    cause = error.strerror or type(error).__name__
    return f"{path}: {cause}" if path else f"{cause} ({error})"


def guard(command):
    """Run a command so that what the user or the machine got wrong ends in one line on
    stderr and exit code 2: the project's errors (their message) and OS errors (path and
    cause). Writers leave no temporary file behind (`tumorchar._io`); bugs still show
    their traceback."""
    from tumorchar.errors import TumorcharError

    @functools.wraps(command)
    def guarded(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except TumorcharError as error:
            fail(str(error))
        except OSError as error:
            fail(environment_message(error))

    return guarded


def guard_commands(app: typer.Typer) -> None:
    """Wrap every registered command of `app` and of its sub-groups with `guard`."""
    for info in app.registered_commands:
        info.callback = guard(info.callback)
    for group in app.registered_groups:
        guard_commands(group.typer_instance)


def console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr)


# --- choices -------------------------------------------------------------------------------


class Preset(StrEnum):
    cpu = "cpu"
    paper = "paper"


class Network3D(StrEnum):
    i3d = "i3d"
    c3d = "c3d"


class I3DSetting(StrEnum):
    cpu = "cpu"
    full = "full"


class LungData(StrEnum):
    phantom = "phantom"
    none = "none"


class Units(StrEnum):
    mm = "mm"
    voxel = "voxel"


class Modality(StrEnum):
    ct = "ct"
    mri = "mri"


class RoiKind(StrEnum):
    box = "box"
    mask = "mask"


class HeatmapMethod(StrEnum):
    auto = "auto"
    grad_cam = "grad-cam"
    occlusion = "occlusion"


class HeatmapFormat(StrEnum):
    nii_gz = "nii.gz"
    nrrd = "nrrd"
    dcm = "dcm"


# --- option types (the same name for the same concept in every command) ---------------------

PatchesIn = Annotated[
    Path,
    typer.Option(
        "--patches", exists=True, file_okay=False, help="Patch store folder (tumorchar patches)."
    ),
]
CohortIn = Annotated[
    Path,
    typer.Option(
        "--cohort", exists=True, file_okay=False, help="Cohort folder (tumorchar cohort)."
    ),
]
LidcDir = Annotated[
    Path,
    typer.Option(
        "--lidc-dir", exists=True, file_okay=False, help="LIDC-IDRI download (TCIA layout)."
    ),
]
StoreOut = Annotated[Path, typer.Option("--out", help="Patch store folder to write or resume.")]
AllowIncomplete = Annotated[
    bool,
    typer.Option(
        "--allow-incomplete",
        help="Use the finished cases of a patch store whose build did not complete or had "
        "failed cases (store.json: complete: false); refused without this.",
    ),
]
WeightsFile = Annotated[
    Path | None,
    typer.Option("--weights", exists=True, dir_okay=False, help="Network weights file."),
]
Seed = Annotated[int, typer.Option("--seed", help="Seed of every random choice.")]
Folds = Annotated[int, typer.Option("--folds", min=2, help="Cross-validation folds.")]
Overwrite = Annotated[
    bool,
    typer.Option("--overwrite", "--force", help="Rebuild / replace what is at --out."),
]
AllowRandomInit = Annotated[
    bool,
    typer.Option(
        "--allow-random-init", help="Without usable weights, use a seeded random network."
    ),
]
Spacing = Annotated[float, typer.Option("--spacing", help="Isotropic voxel size (mm).")]
SizeMm = Annotated[float, typer.Option("--size-mm", help="Side of the cubic patch (mm).")]


def finish_batch(report, out: Path, note: str = "") -> None:
    """Print a store build's summary and failures; exit 1 when a case failed."""
    from rich.markup import escape

    out_console = console()
    if note:
        out_console.print(f"[bold yellow]{escape(note)}[/]", soft_wrap=True)
    out_console.print(
        f"patch store {escape(str(out))}: {len(report.written)} written, "
        f"{len(report.skipped)} already there, {len(report.failures)} failed",
        soft_wrap=True,
    )
    if report.failures:
        err = console(stderr=True)
        err.print("[bold red]failed cases:[/]")
        for message in report.failures.values():
            err.print(f"  - {message}", soft_wrap=True, markup=False)
        raise typer.Exit(1)


def parse_ints(text: str, option: str, count: int | None = None) -> tuple[int, ...]:
    """Comma-separated integers, or a clear error naming the option."""
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        fail(f"{option} must be comma-separated integers, got {text!r}")
    if count is not None and len(values) != count:
        fail(f"{option} needs {count} comma-separated integers, got {text!r}")
    return values
