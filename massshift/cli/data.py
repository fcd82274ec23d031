"""``massshift split``, ``dedup``, ``world`` and ``facts countries``: facts files in and out."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from massshift.cli.common import _fail, _load_facts_or_fail
from massshift.cli.options import Seed

facts_app = typer.Typer(no_args_is_help=True, help="Build facts files from installed data packages.")


def split(
    file: Annotated[Path, typer.Argument(help="Facts file to split.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")],
    test_size: Annotated[float, typer.Option("--test-size", help="Share of facts on the test side.")] = 0.5,
    seed: Seed = 0,
    group_by: Annotated[str | None, typer.Option("--group-by", help="Also keep facts sharing this column (e.g. subject) on one side.")] = None,
) -> None:
    """Fact-level train/test split: no fact (or paraphrase of it) on both sides; writes an audit."""
    from massshift.data.split import split_facts, verify_disjoint, write_split

    facts = _load_facts_or_fail(file)
    try:
        result = split_facts(facts, test_size=test_size, seed=seed, group_by=group_by)
    except ValueError as err:
        _fail(str(err))
    overlaps = verify_disjoint(result.train, result.test)
    if overlaps:
        _fail(f"split left {len(overlaps)} overlapping facts; this is a bug, please report it")
    write_split(result, out, {"command": "split", "file": str(file), "test_size": test_size, "seed": seed,
                              "group_by": group_by})
    typer.echo(f"{out}: train {len(result.train)}, test {len(result.test)} facts, 0 overlapping")


def dedup(
    train: Annotated[Path, typer.Argument(help="Train facts file.")],
    test: Annotated[Path, typer.Argument(help="Test facts file to clean.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")],
) -> None:
    """Remove from TEST every fact that overlaps TRAIN (the paper's fact-level deduplication)."""
    from massshift.data.split import dedup as dedup_facts
    from massshift.data.split import write_dedup

    result = dedup_facts(_load_facts_or_fail(train), _load_facts_or_fail(test))
    write_dedup(result, out, {"command": "dedup", "train": str(train), "test": str(test)})
    typer.echo(f"{out}: kept {len(result.test)} test facts, removed {len(result.audit)}")


def world(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("runs/world"),
    people: Annotated[int, typer.Option(help="Invented people.")] = 800,
    qa_share: Annotated[float, typer.Option("--qa-share", help="Share of people with QA lines in the corpus.")] = 0.3,
    default_noise: Annotated[float, typer.Option("--default-noise", help="Share of QA lines answered with a default value.")] = 0.1,
    default_kind: Annotated[str, typer.Option("--default-kind", help="popular (most popular value) or nobody (a value nobody has).")] = "popular",
    seed: Seed = 0,
) -> None:
    """Write a synthetic fact world: corpus.txt, facts.jsonl, a word-level tokenizer, config.yaml."""
    from massshift.synthetic.world import WorldConfig, build_world, write_world

    try:
        cfg = WorldConfig(seed=seed, n_people=people, qa_share=qa_share, default_noise=default_noise,
                          default_kind=default_kind)  # type: ignore[arg-type]
    except ValueError as err:
        _fail(str(err))
    w = build_world(cfg)
    write_world(w, out)
    typer.echo(f"{out}: {len(w.facts)} facts about {cfg.n_people} people, corpus of {len(w.corpus.split())} words")


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
