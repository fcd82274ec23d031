"""``massshift attribute``: which training facts drive the RL gain (thin wrapper over massshift.studies.attribution_runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from massshift.cli.common import _fail, _load_facts_or_fail
from massshift.cli.options import NoProgress, Threads


def _seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        _fail(f"--seeds expects comma-separated integers (e.g. 0,1,2), got {text!r}")
    if not seeds:
        _fail("--seeds needs at least one seed")
    return seeds


def attribute(
    base: Annotated[str, typer.Argument(help="Base checkpoint (any form `massshift score` loads).")],
    train: Annotated[Path, typer.Option("--train", help="Training facts (bucketed, then sampled per run).")],
    test: Annotated[Path, typer.Option("--test", help="Held-out facts (never trained on).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory; a rerun skips finished runs.")],
    quick: Annotated[bool, typer.Option("--quick", help="A small study (tests; about a minute on the quick demo world).")] = False,
    samples: Annotated[int | None, typer.Option("--samples", "-n", help="Base samples per training fact for the buckets (default 128).")] = None,
    rare_max: Annotated[float, typer.Option("--rare-max", help="Rare bucket: share of correct samples in (0, this].")] = 0.10,
    medium_max: Annotated[float, typer.Option("--medium-max", help="Medium bucket: (rare-max, this]; above: frequent.")] = 0.50,
    sample_size: Annotated[int | None, typer.Option("--sample-size", help="Facts per bucket per run (default 64).")] = None,
    min_bucket: Annotated[int | None, typer.Option("--min-bucket", help="Smaller buckets get no run (default 16).")] = None,
    seeds: Annotated[str | None, typer.Option("--seeds", help="Comma-separated seeds (default 0,1,2).")] = None,
    steps: Annotated[int | None, typer.Option(help="GRPO steps per run (default 60).")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Questions per GRPO step (default 16).")] = None,
    lr: Annotated[float | None, typer.Option(help="GRPO learning rate (default 3e-4).")] = None,
    no_loo: Annotated[bool, typer.Option("--no-loo", help="Skip the leave-one-bucket-out runs.")] = False,
    tracin_dim: Annotated[int | None, typer.Option("--tracin-dim", help="Count-sketch dimension (0: exact scores only).")] = None,
    tracin_params: Annotated[str | None, typer.Option("--tracin-params", help="all, last:N or trainable.")] = None,
    test_limit: Annotated[int | None, typer.Option("--test-limit", help="Use a seeded sample of this many held-out facts (0: all).")] = None,
    match: Annotated[str | None, typer.Option("--match", help="exact (default) or contains, for reward and scoring.")] = None,
    chat: Annotated[bool, typer.Option("--chat/--no-chat", help="Use the tokenizer's chat template.")] = False,
    instruction: Annotated[str, typer.Option(help="With --chat: a line before the question.")] = "",
    threads: Threads = None, no_progress: NoProgress = False,
) -> None:
    """Accessibility buckets, GRPO on each bucket / all / all-but-one, per-example TracIn scores, report."""
    import dataclasses

    from massshift.lm.prompts import PromptConfig
    from massshift.studies.attribution import BucketBounds
    from massshift.studies.attribution_runs import AttributionConfig, run_attribution

    try:
        cfg = AttributionConfig.quick() if quick else AttributionConfig()
        grpo = {k: v for k, v in {"steps": steps, "batch_size": batch_size, "lr": lr, "match_mode": match}.items()
                if v is not None}
        tracin = {k: v for k, v in {"dim": tracin_dim, "params": tracin_params}.items() if v is not None}
        top = {k: v for k, v in {"n_samples": samples, "sample_size": sample_size, "min_bucket": min_bucket,
                                 "test_limit": test_limit}.items() if v is not None}
        cfg = dataclasses.replace(
            cfg, **top, bounds=BucketBounds(rare_max, medium_max), leave_one_out=not no_loo,
            seeds=_seeds(seeds) if seeds else cfg.seeds, grpo=dataclasses.replace(cfg.grpo, **grpo),
            tracin=dataclasses.replace(cfg.tracin, **tracin), prompt=PromptConfig(chat=chat, instruction=instruction))
    except ValueError as err:
        _fail(str(err))
    train_facts, test_facts = _load_facts_or_fail(train), _load_facts_or_fail(test)
    try:
        summary = run_attribution(base, train_facts, test_facts, out, cfg, progress=False if no_progress else None, threads=threads)
    except ValueError as err:
        _fail(str(err))
    typer.echo(f"report: {out / 'report.md'}")
    typer.echo("bucket sizes: " + ", ".join(f"{b} {n}" for b, n in summary["bucket_sizes"].items()))
    for row in summary["gains"]:
        typer.echo(f"  {row['kind']:>6} {row['bucket']:>14}: gain {100 * row['gain']:+.1f} points "
                   f"(seeds: {row['n_seeds']})")
    typer.echo(summary["answer"])
