"""The one progress bar of massshift: rich, on stderr, as a plain callback the library can take."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Protocol

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class Advance(Protocol):
    def __call__(self, n: float = 1, status: str | None = None) -> None: ...


@contextlib.contextmanager
def progress_bar(total: float, description: str, unit: str = "facts", enabled: bool | None = None,
                 completed: float = 0) -> Iterator[Advance]:
    """Yield ``advance(n=1, status=None)``: a bar with rate, live status text (e.g. a loss), time elapsed
    and time left (ETA) on stderr. ``enabled=None``: shown when stderr is a terminal; ``False``: a no-op.
    ``completed``: work already done (a resumed run), so the ETA counts only what is left."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        yield lambda n=1, status=None: None
        return
    columns = (
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn(f"{{task.fields[rate]}} {unit}/s"), TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(), TimeRemainingColumn(),
    )
    with Progress(*columns, transient=False) as prog:
        task = prog.add_task(description, total=total, completed=completed, rate="-", status="")

        def advance(n: float = 1, status: str | None = None) -> None:
            prog.advance(task, n)
            speed = prog.tasks[task].speed
            fields = {"rate": f"{speed:.2f}" if speed else "-"}
            if status is not None:
                fields["status"] = status
            prog.update(task, **fields)

        yield advance
