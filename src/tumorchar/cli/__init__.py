"""The `tumorchar` command-line program: thin Typer adapters over the library.

One module per command group (`cohort`, `patches`, `features`, `reproduce`, `train`,
`predict`, `weights`); shared option types, choices and the error / progress helpers are
in `_common`.
Commands import their heavy dependencies inside their bodies, so `tumorchar --help` stays
instant. Nothing in the library imports this package.

Adding a command: write ``def my_command(...)`` in the module of its group (or a new module
with ``register(app)``), using the option types of `_common`, and register it below.
"""

from __future__ import annotations

import typer

from tumorchar import __version__
from tumorchar.cli import cohort, features, patches, predict, reproduce, train, weights
from tumorchar.cli._common import guard_commands

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
    no_progress: bool = typer.Option(
        False,
        "--no-progress",
        help="No progress bars (also: TUMORCHAR_NO_PROGRESS=1 in the environment).",
    ),
) -> None:
    """tumorchar command-line program."""
    from tumorchar import progress

    progress.set_enabled(not no_progress)


for module in (cohort, patches, features, reproduce, train, predict, weights):
    module.register(app)
guard_commands(app)

__all__ = ["app"]

if __name__ == "__main__":  # pragma: no cover
    app()
