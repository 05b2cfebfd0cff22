"""The one progress bar of tumorchar (Rich, on stderr), and the switch that turns every bar
off: `--no-progress` on the command line or ``TUMORCHAR_NO_PROGRESS=1`` in the environment.

Library code asks for a bar with `progress_bar(enabled, total, description)`; a disabled
bar (or a globally disabled program) is a no-op, so batch jobs and logs stay clean.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

ENV_VAR = "TUMORCHAR_NO_PROGRESS"
_disabled = False


def set_enabled(enabled: bool) -> None:
    """Turn every progress bar of this process on or off (the CLI's ``--no-progress``)."""
    global _disabled
    _disabled = not enabled


def enabled() -> bool:
    """False after ``set_enabled(False)`` or when ``TUMORCHAR_NO_PROGRESS`` is set to a
    non-empty value other than ``0``."""
    return not _disabled and os.environ.get(ENV_VAR, "") in ("", "0")


@contextmanager
def progress_bar(
    show: bool, total: int, description: str = "working", transient: bool = False
) -> Iterator[Callable[..., None]]:
    """Yield ``advance(n=1)``; a Rich bar over ``total`` items when ``show`` and `enabled`."""
    if not (show and enabled()):
        yield lambda n=1: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    bar = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=transient,
    )
    with bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)
