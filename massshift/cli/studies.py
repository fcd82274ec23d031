"""``massshift demo`` and ``massshift study``: whole studies in one run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from massshift.cli.common import _fail, _pct
from massshift.cli.options import NoProgress, Seed, Threads


def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder (stages are reused when unchanged).")] = Path("runs/demo"),
    quick: Annotated[bool, typer.Option("--quick", help="Small world and short runs (about a minute; for tests).")] = False,
    seed: Seed = 0,
    threads: Threads = None,
    no_progress: NoProgress = False,
) -> None:
    """The whole study on a synthetic world: world, pretraining, split, GRPO, SFT, compare, report."""
    from massshift.studies.demo import DemoConfig, run_demo

    summary = run_demo(out, DemoConfig(seed=seed, quick=quick, threads=threads), progress=not no_progress)
    rl, sft = summary["rl"], summary["sft"]
    typer.echo(f"report: {summary['report']}")
    typer.echo(f"held-out greedy accuracy: base {_pct(rl['base_accuracy'])}, GRPO {_pct(rl['accuracy'])}, "
               f"SFT {_pct(sft['accuracy'])}")
    typer.echo(f"relative gain: GRPO {_pct(rl['relative_gain'], True)}, SFT {_pct(sft['relative_gain'], True)}")
    typer.echo(f"redistribution share (GRPO, {rl['criterion']} criterion): {rl['from_tail']} of {rl['n_new_greedy']} "
               f"newly greedy-correct facts were tail-correct in the base ({_pct(rl['redistribution_share'])}); "
               f"{rl['from_absent']} were absent")
    kinds = ", ".join(f"{n} {k}" for k, n in rl.get("gain_kinds", {}).items() if n)
    typer.echo(f"what GRPO's {rl['n_new_greedy']} gains are made of: {kinds or 'none'}")
    for warning in rl.get("collapse_warnings", []):
        typer.echo(f"warning: {warning}")
    typer.echo("held-out greedy accuracy with 95% CIs (results.csv):")
    for row in summary["results"]:
        typer.echo(f"  {row['method']:>18}: {_pct(row['accuracy'])} [{_pct(row['ci_low'])}, {_pct(row['ci_high'])}]")


def study(
    name: Annotated[str, typer.Argument(help="The study: countries (--model on real country facts; smollm2-countries is an alias).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory (reused stage by stage when settings match).")],
    size: Annotated[str, typer.Option("--size", help="full (300 test facts, lr grid, 3 GRPO seeds: hours on a CPU), cpu (80 test facts, about 30 minutes) or quick.")] = "full",
    quick: Annotated[bool, typer.Option("--quick", help="The same as --size quick (a few minutes on one thread; for tests).")] = False,
    facts: Annotated[list[Path] | None, typer.Option("--facts", "-f", help="Fact files to study instead of the built-in country facts (repeatable; e.g. PopQA's parquet).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the split, sampling and training.")] = 0,
    threads: Annotated[int | None, typer.Option(help="Torch CPU threads (default: the cores not already busy).")] = None,
    model: Annotated[str, typer.Option("--model", help="Checkpoint studied (any form `massshift score` loads).")] = "smollm2-135m",
    base_only: Annotated[bool, typer.Option("--base-only", help="Stop after the prompt choice and the base scores (no training).")] = False,
    set_: Annotated[list[str] | None, typer.Option("--set", help="field=value of StudyConfig (n_test, n_val, n_train, n_samples, distractors, lr_grid, grpo_seeds, cot_tokens, max_new_tokens, trainers: e.g. \"trainers=[grpo, sft]\"); repeatable.")] = None,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="Hide progress bars.")] = False,
) -> None:
    """Split, choose the prompt on validation, score the base, train GRPO/SFT/RFT/DPO (learning rate chosen on
    validation), compare, tabulate with majority vote, k-shot, chain of thought and the constant answer."""
    import yaml

    from massshift.studies.countries import StudyConfig, run_study

    missing = [str(f) for f in facts or [] if not f.exists()]
    if missing:
        _fail(f"--facts: no such file: {', '.join(missing)}")
    extra: dict[str, object] = {}
    for item in set_ or []:
        key, sep, value = item.partition("=")
        if not sep or key.strip() not in SETTABLE:
            _fail(f"--set expects field=value with field one of {', '.join(SETTABLE)}, got {item!r}")
        extra[key.strip()] = yaml.safe_load(value)
    try:
        cfg = StudyConfig(name=name, seed=seed, size=size, quick=quick, threads=threads, model=model,
                          base_only=base_only, facts=tuple(str(f) for f in facts or ()), **extra)
    except (ValueError, TypeError) as err:
        _fail(str(err))
    summary = run_study(out, cfg, progress=not no_progress)
    typer.echo(f"chosen on validation: {summary['choice']['candidate']} "
               f"(accuracy {summary['choice']['val_accuracy']:.1%})")
    typer.echo("held-out greedy accuracy with 95% CIs (results.csv):")
    for row in summary["results"]:
        typer.echo(f"  {row['method']:>24}: {row['accuracy']:.1%} [{row['ci_low']:.1%}, {row['ci_high']:.1%}]"
                   f"  relative {row['relative_gain']:+.1%}")
    if summary.get("grpo_seeds"):
        sp = summary["grpo_seeds"]
        typer.echo(f"GRPO over {len(sp['accuracy'])} seeds: {sp['mean']:.1%} +/- {sp['sd']:.1%} (sd), "
                   f"gain {sp['gain_mean']:+.1%} +/- {sp['gain_sd']:.1%}")
    typer.echo(f"total {summary['timings_s']['total']:.0f} s; {out / 'summary.json'}")


SETTABLE = ("n_test", "n_val", "n_train", "n_samples", "distractors", "lr_grid", "grpo_seeds", "cot_tokens",
            "max_new_tokens", "trainers")
