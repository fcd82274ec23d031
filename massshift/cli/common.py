"""What every command shares: logging set-up, the clean error exit, facts loading, the launch context."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import typer

logger = logging.getLogger("massshift")


def _setup_logging(verbose: bool) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s",
                        handlers=[RichHandler(show_path=False, rich_tracebacks=False)], force=True)
    for noisy in ("httpx", "urllib3", "filelock", "fontTools", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # transformers' own "Loading weights" bars (read when it is first imported); massshift draws its own
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(2)


# Options shared by score and compare (one definition each) -------------------------------------------


def _load_facts_or_fail(path: Path | str, skip_invalid: bool = False):
    """The facts table of a file, or of ``hf:NAME[:SPLIT]`` (a dataset in the local cache); a clean exit otherwise."""
    from massshift.data.facts import FactsError, load_facts

    try:
        if str(path).startswith("hf:"):
            from massshift.data.hf import load_hf_facts

            return load_hf_facts(str(path), skip_invalid=skip_invalid)
        return load_facts(path, skip_invalid=skip_invalid)
    except FactsError as err:
        _fail(str(err))


def _launch():
    """This process's place in an ``accelerate launch`` run (a lone process otherwise)."""
    from massshift.score.cache import Launch, ShardError

    try:
        return Launch()
    except ShardError as err:
        _fail(str(err))


def _check_launch(launch, device_map: str | None) -> None:
    if launch.distributed and device_map:
        _fail("--device-map spreads one model over every device of one process; it cannot be combined with "
              "several processes (accelerate launch --num_processes > 1). Use one or the other.")


def _pct(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.1%}" if signed else f"{value:.1%}"
