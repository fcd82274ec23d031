"""The ``massshift`` command line, built here in one place: thin typer wrappers that parse, call library
functions and save. Each command module (score, data, train, studies, attribute) defines plain functions or
a sub-app and never imports this one back. Heavy imports (torch, transformers) happen inside command bodies,
so ``--help`` is instant; logging and progress bars are set up once, in the callback.
"""

from __future__ import annotations

from typing import Annotated

import typer

from massshift.cli import attribute, data, score, studies, train
from massshift.cli.common import _setup_logging

app = typer.Typer(
    name="massshift", add_completion=False, rich_markup_mode="rich", no_args_is_help=True,
    help="Did RL teach a language model new facts, or move probability mass onto facts it already held?",
)


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False) -> None:
    _setup_logging(verbose)


for command in (score.score, score.compare, score.figures, data.split, data.dedup, data.world, studies.demo,
                attribute.attribute, studies.study, train.baselines):
    app.command()(command)
app.add_typer(train.train_app, name="train")
app.add_typer(data.facts_app, name="facts")


def main() -> None:
    """Console-script entry point."""
    app()
