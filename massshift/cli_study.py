"""``massshift facts countries``: real facts from installed data packages (``massshift.realfacts``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from massshift.cli import _fail, app

facts_app = typer.Typer(no_args_is_help=True, help="Build facts files from installed data packages.")
app.add_typer(facts_app, name="facts")


@facts_app.command()
def countries(
    out: Annotated[Path, typer.Option("--out", "-o", help="Facts file to write (.jsonl).")],
    relation: Annotated[list[str] | None, typer.Option("--relation", "-r", help="Relation to build (repeatable): capital, currency, official_language, region, subregion. Default: all.")] = None,
    all_templates: Annotated[bool, typer.Option("--all-templates", help="One fact per question template (paraphrases) instead of one per country and relation.")] = False,
) -> None:
    """Country -> capital, currency, official language, region, subregion (countryinfo + babel, offline)."""
    from massshift.facts import save_facts
    from massshift.realfacts import RELATIONS, RealFactsError, country_facts

    try:
        df = country_facts(tuple(relation) if relation else RELATIONS, all_templates=all_templates)
    except (RealFactsError, ValueError) as err:
        _fail(str(err))
    if out.suffix.lower() != ".jsonl":
        _fail(f"{out}: facts are written as .jsonl; give a path ending in .jsonl")
    save_facts(df, out)
    counts = ", ".join(f"{r} {n}" for r, n in df["relation"].value_counts().sort_index().items())
    typer.echo(f"wrote {len(df)} facts to {out} ({counts})")
    for reason, n in df.attrs["dropped"].items():
        typer.echo(f"  dropped {n}: {reason}")
