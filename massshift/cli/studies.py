"""``massshift facts countries``: real facts from installed data packages (``massshift.data.countries``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from massshift.cli.app import _fail, app

facts_app = typer.Typer(no_args_is_help=True, help="Build facts files from installed data packages.")
app.add_typer(facts_app, name="facts")


@facts_app.command()
def countries(
    out: Annotated[Path, typer.Option("--out", "-o", help="Facts file to write (.jsonl).")],
    relation: Annotated[list[str] | None, typer.Option("--relation", "-r", help="Relation to build (repeatable): capital, currency, official_language, region, subregion. Default: all.")] = None,
    all_templates: Annotated[bool, typer.Option("--all-templates", help="One fact per question template (paraphrases) instead of one per country and relation.")] = False,
) -> None:
    """Country -> capital, currency, official language, region, subregion (countryinfo + babel, offline)."""
    from massshift.data.countries import RELATIONS, RealFactsError, country_facts
    from massshift.data.facts import save_facts

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


@app.command()
def study(
    name: Annotated[str, typer.Argument(help="The study: smollm2-countries (SmolLM2-135M-Instruct on country facts).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory (reused stage by stage when settings match).")],
    quick: Annotated[bool, typer.Option("--quick", help="Tiny sizes and runs (a few minutes on one thread; for tests).")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the split, sampling and training.")] = 0,
    threads: Annotated[int | None, typer.Option(help="Torch CPU threads (default: the cores not already busy).")] = None,
    model: Annotated[str, typer.Option("--model", help="Checkpoint studied (any form `massshift score` loads).")] = "smollm2-135m",
    base_only: Annotated[bool, typer.Option("--base-only", help="Stop after the prompt choice and the base scores (no training).")] = False,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="Hide progress bars.")] = False,
) -> None:
    """Split, choose the prompt on validation, score the base, train GRPO/SFT/RFT, compare, tabulate."""
    from massshift.studies.countries import StudyConfig, run_study

    try:
        cfg = StudyConfig(name=name, seed=seed, quick=quick, threads=threads, model=model, base_only=base_only)
    except ValueError as err:
        _fail(str(err))
    summary = run_study(out, cfg, progress=not no_progress)
    typer.echo(f"chosen on validation: {summary['choice']['candidate']} "
               f"(accuracy {summary['choice']['val_accuracy']:.1%})")
    typer.echo("held-out greedy accuracy with 95% CIs (results.csv):")
    for row in summary["results"]:
        typer.echo(f"  {row['method']:>24}: {row['accuracy']:.1%} [{row['ci_low']:.1%}, {row['ci_high']:.1%}]"
                   f"  relative {row['relative_gain']:+.1%}")
    typer.echo(f"total {summary['timings_s']['total']:.0f} s; {out / 'summary.json'}")
