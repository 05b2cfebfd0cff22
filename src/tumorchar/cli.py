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



if __name__ == "__main__":  # pragma: no cover
    app()
