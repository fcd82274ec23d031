"""Rich progress bars for long work, as plain callbacks the library can take."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


@contextlib.contextmanager
def progress_bar(total: float, description: str, unit: str = "facts",
                 enabled: bool | None = None) -> Iterator[Callable[[float], None]]:
    """Yield ``advance(n)``; shows a bar with rate and time left on stderr (off when not enabled)."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        yield lambda n: None
        return
    columns = (
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn(f"{{task.fields[rate]}} {unit}/s"), TimeElapsedColumn(), TimeRemainingColumn(),
    )
    with Progress(*columns, transient=False) as prog:
        task = prog.add_task(description, total=total, rate="-")

        def advance(n: float) -> None:
            prog.advance(task, n)
            speed = prog.tasks[task].speed
            prog.update(task, rate=f"{speed:.2f}" if speed else "-")

        yield advance
