"""Where the numbers are computed: torch CPU threads, chosen from the cores other work leaves free.

Torch threads that find their core busy spin and wait for each other, so
oversubscribing the cores is far worse than running one thread
(docs/speed.md has the measurements). ``auto_threads`` therefore counts the
cores not busy right now (``/proc/stat`` over a quarter second; the load
average lags by minutes), ``set_threads`` applies a count once per process, and
``torch_threads`` sets one for a block and restores the previous count (the
trainers' ``threads`` setting).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator

import torch

logger = logging.getLogger(__name__)

_INTEROP_SET = False


def _cpu_times() -> tuple[int, int] | None:
    """(idle, total) jiffies of all cores from /proc/stat, or None off Linux."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return fields[3] + (fields[4] if len(fields) > 4 else 0), sum(fields[:8])


def busy_cores(window_s: float = 0.25) -> float:
    """How many cores other work keeps busy now: /proc/stat over ``window_s``
    (the load average lags by minutes), else the 1-minute load average."""
    cores = os.cpu_count() or 1
    first = _cpu_times()
    if first is not None:
        time.sleep(window_s)
        second = _cpu_times()
        if second is not None and second[1] > first[1]:
            idle = (second[0] - first[0]) / (second[1] - first[1])
            return max(0.0, (1.0 - idle) * cores)
    try:
        return os.getloadavg()[0]
    except OSError:
        return 0.0


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity on Linux, else all cores)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def auto_threads() -> int:
    """The cores not already busy: ``usable_cores()`` minus ``busy_cores()``, at least 1.

    Oversubscribed torch threads spin and wait for each other, so a busy machine gets fewer threads
    (docs/speed.md).
    """
    cores = usable_cores()
    return max(1, min(cores, int(cores - busy_cores() + 0.5)))


def set_threads(n: int | None = None) -> int:
    """Set torch's intra-op threads to ``n`` (None: ``auto_threads()``) and inter-op threads to 1 once."""
    global _INTEROP_SET
    n = auto_threads() if n is None else int(n)
    if n < 1:
        raise ValueError(f"set_threads needs n >= 1, got {n}")
    torch.set_num_threads(n)
    if not _INTEROP_SET:
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:  # torch allows it only before the first parallel work
            logger.debug("inter-op threads already fixed at %d", torch.get_num_interop_threads())
        _INTEROP_SET = True
    return n


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch CPU threads (None: leave as is), then restore."""
    prev = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(prev)


def default_device() -> str:
    """``cuda`` when a GPU is visible, else ``cpu``."""
    return "cuda" if torch.cuda.is_available() else "cpu"
