"""The compare report: two score tables in, a run directory that describes itself out.

:func:`write_compare_report` validates the base and RL score tables, sorts every
fact into a state under each model, merges them and writes into ``out_dir``:

- ``config.yaml`` and ``env.json`` (``rundir.init_run_dir``);
- ``facts.parquet``: one row per fact, fact-level columns unsuffixed and each
  model's columns suffixed ``_base`` / ``_rl``, with ``state``,
  ``state_logprob``, (when samples exist) ``state_sampling`` and (when
  distractors were scored) ``state_chance`` per model;
- ``transitions.csv``: tidy, one row per (criterion, base_state, rl_state) with
  ``count``, ``row_share`` = P(RL state | base state) and its bootstrap interval
  ``row_share_lo`` / ``row_share_hi``; rows for ``sampling`` appear only when
  both models have samples, rows for ``chance`` only when both have distractors;
- ``summary.json``: ``stats.summarise`` plus the labels;
- ``trajectory.csv`` (several RL checkpoints only): state shares per checkpoint,
  the base first, from ``transitions.state_shares``;
- ``report.md`` and ``figures/`` (PNG + PDF, drawn by ``plots.draw_all`` from the
  files above, so ``massshift figures DIR`` re-draws exactly these).

With several RL tables (a training trajectory, in training order) the LAST one
is the headline comparison: facts.parquet, transitions.csv and summary.json
describe base -> last checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from massshift.analysis.states import (
    MIN_PRIOR,
    StateConfig,
    add_state_columns,
    auto_criterion,
    has_distractors,
    has_samples,
)
from massshift.analysis.statistics import Bootstrap, StatsConfig, model_states, summarise, transition_table
from massshift.analysis.transitions import merge_models, state_shares
from massshift.configio import help_field
from massshift.report import plots
from massshift.rundir import init_run_dir, write_csv, write_json, write_parquet, write_text
from massshift.score.formats import format_line, format_shift, format_summary
from massshift.score.schema import STATES, ScoreTableError, check_score_table

logger = logging.getLogger(__name__)

RLScores = pd.DataFrame | Sequence[tuple[str, pd.DataFrame]] | Mapping[str, pd.DataFrame]


@dataclass(frozen=True)
class CompareConfig:
    """Settings of a comparison: the state rules, the bootstrap and the model labels."""

    states: StateConfig = help_field(help="State rules (criterion, eps, chance rules).", default_factory=StateConfig)
    stats: StatsConfig = help_field(help="Paired bootstrap settings.", default_factory=StatsConfig)
    base_label: str = help_field("base", help="Name of the base model in tables, figures and the report.")
    rl_label: str = help_field("rl", help="Name of the RL model when a single RL table is given.")

    def __post_init__(self) -> None:
        if not isinstance(self.states, StateConfig) or not isinstance(self.stats, StatsConfig):
            raise TypeError("CompareConfig.states must be a StateConfig and .stats a StatsConfig")
        for field in ("base_label", "rl_label"):
            if not isinstance(getattr(self, field), str) or not getattr(self, field).strip():
                raise ValueError(f"CompareConfig.{field} must be a non-empty string, got {getattr(self, field)!r}.")
        if self.base_label == self.rl_label:
            raise ValueError(f"CompareConfig.base_label and rl_label must differ; both are {self.base_label!r}.")


@dataclass(frozen=True)
class CompareRun:
    """A compare run directory read back: the tables a notebook needs."""

    run_dir: Path
    facts: pd.DataFrame
    transitions: pd.DataFrame
    summary: dict[str, Any]
    config: dict[str, Any]
    trajectory: pd.DataFrame | None = None


def _checked(df: pd.DataFrame, name: str) -> pd.DataFrame:
    if not isinstance(df, pd.DataFrame):
        raise ScoreTableError(f"{name} must be a pandas DataFrame (a score table), got {type(df).__name__}")
    if len(df) == 0:
        raise ScoreTableError(f"{name} is empty (0 facts); score the model on a non-empty facts file first.")
    check_score_table(df, name=name)
    return df


def _rl_list(rl_scores: RLScores, rl_label: str) -> list[tuple[str, pd.DataFrame]]:
    if isinstance(rl_scores, pd.DataFrame):
        return [(rl_label, rl_scores)]
    items = list(rl_scores.items()) if isinstance(rl_scores, Mapping) else [tuple(x) for x in rl_scores]
    if not items:
        raise ScoreTableError("no RL score table given; pass a DataFrame or a list of (label, DataFrame)")
    labels = [str(label) for label, _ in items]
    if len(set(labels)) != len(labels):
        raise ValueError(f"RL checkpoint labels must be unique, got {labels}")
    return [(str(label), df) for label, df in items]


def write_compare_report(
    base_scores: pd.DataFrame,
    rl_scores: RLScores,
    out_dir: str | os.PathLike[str],
    config: CompareConfig | None = None,
    extra_config: dict[str, Any] | None = None,
    seed: int | None = None,
    figures: bool = True,
) -> dict[str, Any]:
    """Compare a base score table with one RL table (or several, in training order) and write a run dir.

    ``seed`` overrides ``config.stats.seed``. ``extra_config`` (checkpoints, facts file,
    scoring settings) is written into config.yaml beside the compare settings.
    ``figures=False`` skips drawing (a few seconds per figure on a slow CPU); the
    figures can be drawn later from the run dir with ``plots.draw_all``.
    Returns the summary dict (the content of summary.json).
    """
    config = config or CompareConfig()
    if seed is not None:
        config = dataclasses.replace(config, stats=dataclasses.replace(config.stats, seed=seed))
    stats_cfg = config.stats
    rl_list = _rl_list(rl_scores, config.rl_label)
    if config.base_label in {label for label, _ in rl_list}:
        raise ValueError(f"an RL checkpoint label equals the base label {config.base_label!r}; rename one")
    checked_base = _checked(base_scores, f"base score table ({config.base_label})")
    checked_rl = [(label, _checked(df, f"rl score table ({label})")) for label, df in rl_list]
    # one criterion for every table: chance only when all of them carry distractor columns
    state_cfg, reason = _criterion(config.states, [checked_base, *[df for _, df in checked_rl]])
    base = add_state_columns(checked_base, state_cfg)
    rl_tables = [(label, add_state_columns(df, state_cfg)) for label, df in checked_rl]
    merged_all = [(label, merge_models(base, df)) for label, df in rl_tables]  # checks every fact set first
    headline_label, merged = merged_all[-1]

    out = init_run_dir(
        out_dir, {**(extra_config or {}), "compare": dataclasses.asdict(config),
                  "checkpoints": {"base": config.base_label, "rl": [label for label, _ in rl_list]}},
        seed=config.stats.seed,
    )
    summary = summarise(merged, state_cfg, stats_cfg)
    summary = {"labels": {"base": config.base_label, "rl": headline_label},
               "checkpoints": [label for label, _ in rl_list], **summary,
               "formats": _formats(checked_base, checked_rl[-1][1], config, state_cfg, reason, extra_config)}

    write_parquet(out / "facts.parquet", merged)
    boot = Bootstrap(len(merged), stats_cfg)
    criteria = (["logprob"] + (["sampling"] if has_samples(base) and has_samples(rl_tables[-1][1]) else [])
                + (["chance"] if has_distractors(base) and has_distractors(rl_tables[-1][1]) else []))
    tables = []
    for crit in criteria:
        b_states, r_states = model_states(merged, dataclasses.replace(state_cfg, criterion=crit))
        tables.append(transition_table(b_states, r_states, boot, criterion=crit))
    write_csv(out / "transitions.csv", pd.concat(tables, ignore_index=True))
    if len(rl_tables) > 1:
        shares = state_shares({config.base_label: base["state"], **{label: df["state"] for label, df in rl_tables}})
        write_csv(out / "trajectory.csv", shares)
    write_json(out / "summary.json", summary)
    drawn = sorted({path.stem for path in plots.draw_all(out)}) if figures else []
    write_text(out / "report.md", render_report(summary, dataclasses.replace(config, states=state_cfg),
                                                drawn))
    logger.info("compare report written to %s", out)
    return summary


def _criterion(states: StateConfig, tables: list[pd.DataFrame]) -> tuple[StateConfig, str]:
    """The one resolution of ``auto`` for a comparison: over every table (base and each checkpoint), with
    the reason report.md prints, computed on the same tables."""
    if states.criterion != "auto":
        return states, f"criterion {states.criterion!r} was given"
    criterion, reason = auto_criterion(states, *tables)
    return states.with_criterion(criterion), reason


def _formats(base: pd.DataFrame, rl: pd.DataFrame, config: CompareConfig, state_cfg: StateConfig, reason: str,
             extra_config: dict[str, Any] | None) -> dict[str, Any]:
    """Format diagnostics of both models (``formats``), their shift, the warnings and why the criterion."""
    eps = state_cfg.threshold
    b, r = format_summary(base, eps), format_summary(rl, eps)
    for label, s in ((config.base_label, b), (config.rl_label, r)):
        if s.get("warning"):
            logger.warning("%s: %s", label, s["warning"])
    score = (extra_config or {}).get("score")
    match = getattr(getattr(score, "match", None), "mode", None)
    prompt = getattr(score, "prompt", None)
    if isinstance(score, Mapping):
        match = (score.get("match") or {}).get("mode")
        prompt = None
    return {"base": b, "rl": r, "shift": format_shift(b, r), "criterion_reason": reason, "match_mode": match,
            "prefix": _prefix_text(prompt)}


def _prefix_text(prompt: Any) -> str | None:
    if prompt is None:
        return None
    if getattr(prompt, "self_prefix", False):
        return "self (the model's own greedy lead-in before the first alias or distractor)"
    if getattr(prompt, "question_prefixes", ()):
        return f"per question ({len(prompt.question_prefixes)} prefixes, e.g. {prompt.question_prefixes[0][1]!r})"
    if getattr(prompt, "relation_prefixes", ()):
        return "per relation: " + "; ".join(f"{k}: {v!r}" for k, v in prompt.relation_prefixes)
    return repr(prompt.answer_prefix) if getattr(prompt, "answer_prefix", "") else "none"


def _formats_md(fm: dict[str, Any] | None, b: str, r: str, summary: dict[str, Any]) -> list[str]:
    """The answer-format section: each model's formats, the format shift next to the knowledge shift."""
    if not fm:
        return []
    sh = fm["shift"]
    acc = summary["gain"]["absolute"]["value"]
    knowledge = "n/a" if acc is None else f"{100 * acc:+.1f} points"
    lines = ["## Answer format", "",
             f"- criterion `{summary['criterion']}`: {fm['criterion_reason']}",
             f"- {format_line(b, fm['base'])}", f"- {format_line(r, fm['rl'])}",
             f"- format shift {b} \u2192 {r}: bare {100 * sh['greedy_bare']:+.1f} points, sentences "
             f"{100 * sh['greedy_sentence']:+.1f}, hedges {100 * sh['greedy_hedge']:+.1f}, empty "
             f"{100 * sh['greedy_empty']:+.1f}, mean length {sh['greedy_mean_words']:+.1f} words; knowledge shift: "
             f"greedy accuracy {knowledge}"]
    if fm.get("prefix"):
        lines.append(f"- answer prefix: {fm['prefix']}")
    if fm.get("match_mode") == "contains":
        lines.append("- matching `contains`: an answer counts when an alias appears in it as a whole-word span, "
                     "has at most max_words words, and names no distractor (another value of the same relation); "
                     "an answer that also names a distractor is wrong (anti-hedging), in scoring and in rewards")
    for label, s in ((b, fm["base"]), (r, fm["rl"])):
        if s.get("warning"):
            lines.append(f"- **warning ({label})**: {s['warning']}")
    return [*lines, ""]


# ----------------------------------------------------------------------------- report.md

def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _est(e: dict[str, Any] | None, fmt: str = "{:.3f}", scale: float = 1.0) -> str:
    if not e or e.get("value") is None:
        return "n/a"
    lo, hi = e["ci"]
    ci = "" if lo is None else f" [{fmt.format(scale * lo)}, {fmt.format(scale * hi)}]"
    return fmt.format(scale * e["value"]) + ci


def verdict(summary: dict[str, Any]) -> str:
    """The one-sentence answer: where the newly greedy-correct facts were in the base."""
    red = summary["redistribution"]
    n = red["n_new_greedy"]
    if n == 0:
        return "No fact became greedy-correct."
    return (
        f"Of the {n} facts that became greedy-correct, {red['from_tail']} ({100 * red['from_tail'] / n:.1f}%) "
        f"were tail-correct in the base and {red['from_absent']} ({100 * red['from_absent'] / n:.1f}%) were absent."
    )


def churn_sentence(summary: dict[str, Any]) -> str:
    """One sentence on facts gained and lost in greedy correctness."""
    ch = summary["churn"]
    g, lost, net = (int(ch[k]["value"]) for k in ("gained", "lost", "net"))
    ci = ch["net"]["ci"]
    ci_text = "" if ci[0] is None else f", {100 * summary['bootstrap']['ci']:.0f}% CI [{ci[0]:+.0f}, {ci[1]:+.0f}]"
    return (f"RL made {g} facts greedy-correct and {lost} facts no longer greedy-correct "
            f"(net {net:+d}{ci_text}); lost facts went to tail-correct {ch['lost_to'][STATES[1]]} "
            f"and absent {ch['lost_to'][STATES[2]]} times.")


def _matrix_md(counts: dict[str, dict[str, int]], base: str, rl: str) -> list[str]:
    lines = [f"| {base} \\ {rl} | " + " | ".join(STATES) + " | total |", "|---" * (len(STATES) + 2) + "|"]
    for b in STATES:
        total = sum(counts[b].values())
        cells = [f"{counts[b][r]} ({_pct(counts[b][r] / total) if total else 'n/a'})" for r in STATES]
        lines.append(f"| {b} | " + " | ".join(cells) + f" | {total} |")
    return lines


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _exposure_md(exp: dict[str, Any] | None, base: str, rl: str) -> list[str]:
    """The exposure table (greedy and tail-correct shares per bucket and criterion) and the never-seen control."""
    if not exp:
        return []
    crits = list(dict.fromkeys(row["criterion"] for row in exp["rows"]))
    cell = {(row["bucket"], row["model"], row["criterion"]): row for row in exp["rows"]}
    what = "exposure count" if exp["kind"] == "exposure" else "popularity quantile"
    head = ["bucket", "n", f"greedy {base}", f"greedy {rl}"] + [f"tail ({c}) {m}" for c in crits for m in (base, rl)]
    lines = [f"## Exposure (state shares by {what})", "", "| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for bucket in exp["buckets"]:
        first = cell[(bucket, "base", crits[0])]
        if first["n"] == 0:
            continue
        cells = [bucket, str(first["n"]), _pct(first[STATES[0]]), _pct(cell[(bucket, "rl", crits[0])][STATES[0]])]
        cells += [_pct(cell[(bucket, m, c)][STATES[1]]) for c in crits for m in ("base", "rl")]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    never = exp.get("never_seen")
    if never:
        shares = "; ".join(f"`{c}` {base} {_pct(v['base'])}, {rl} {_pct(v['rl'])}" for c, v in never["tail_share"].items())
        lines += [f"Never-seen control (popularity 0, n = {never['n']}; any tail-correct label here is guessing): "
                  f"labelled tail-correct by {shares}; greedy-correct {base} {_pct(never['greedy_share']['base'])}, "
                  f"{rl} {_pct(never['greedy_share']['rl'])}.", ""]
    if exp.get("n_missing"):
        lines += [f"{exp['n_missing']} facts without popularity are left out of this table.", ""]
    return lines


def render_report(summary: dict[str, Any], config: CompareConfig, figures: Sequence[str] = ()) -> str:
    """report.md: setup, headline numbers with CIs, the matrix, the verdict, churn, figures."""
    b, r = summary["labels"]["base"], summary["labels"]["rl"]
    level = f"{100 * config.stats.ci:.0f}% CI"
    acc, gain, mc = summary["accuracy"], summary["gain"], summary["mcnemar"]
    red, nf = summary["redistribution"], summary["n_nonfinite_logp"]
    lines = [
        f"# Compare: {b} \u2192 {r}", "",
        "## Setup", "",
        f"- facts: {summary['n_facts']}; checkpoints: {', '.join(summary['checkpoints'])} (headline: {r}, the last)",
        f"- state criterion: `{summary['criterion']}`; eps = {summary['eps']:.4g} (n = {config.states.n}, alpha = {config.states.alpha}"
        + (f", eps given = {config.states.eps}" if config.states.eps is not None else ", eps = -ln(alpha)/n") + ")"
        + (f"; chance: gold in the top {config.states.chance_top:g} of gold + distractors and >= {config.states.chance_ratio:g} x "
           "the median distractor's probability, and above " + f"{config.states.chance_specificity:g} of the same value's "
           "scores on other subjects' prompts (value-prior test, where at least " + f"{MIN_PRIOR} exist)"
           if summary["criterion"] == "chance" else ""),
        f"- paired bootstrap: {config.stats.n_boot} resamples, seed {config.stats.seed}; intervals are {level}",
        f"- non-finite log p(gold) (kept, counted, never in log-prob medians): {b} {nf['base']}, {r} {nf['rl']}",
        "", "## Verdict", "", verdict(summary), "", churn_sentence(summary), "",
        f"## Headline numbers ({level} in brackets)", "",
        f"- greedy accuracy: {b} {_est(acc['base'])}, {r} {_est(acc['rl'])}",
        f"- gain: absolute {_est(gain['absolute'], '{:+.1f}', 100)} points; relative {_est(gain['relative'], '{:+.1f}', 100)}%",
        f"- McNemar exact test: b = {mc['b']} ({b} only), c = {mc['c']} ({r} only), p = {mc['p_value']:.3g}",
        f"- redistribution share (tail-correct in {b}, `{red['criterion']}`): {_est(red['share_tail'])}",
    ]
    samp = summary["redistribution_by_criterion"].get("sampling")
    if samp is not None:
        lines.append(f"- redistribution share under `sampling`: {_est(samp['share_tail'])} "
                     f"({samp['from_tail']} of {samp['n_new_greedy']})")
    if summary.get("agreement"):
        lines.append(f"- agreement of the logprob and sampling states: {b} {_pct(summary['agreement']['base'])}, "
                     f"{r} {_pct(summary['agreement']['rl'])}")
    pairs = summary.get("agreement_pairwise") or {}
    for pair in (pairs.get("base") or {}):
        if pair != "logprob~sampling":
            lines.append(f"- agreement of the {pair.replace('~', ' and ')} states: {b} {_pct(pairs['base'][pair])}, "
                         f"{r} {_pct(pairs['rl'][pair])}")
    ch = summary.get("chance")
    if ch:
        lines.append(f"- distractors: mean K_q {b} {_num(ch['base']['k_q_mean'])}, {r} {_num(ch['rl']['k_q_mean'])}; "
                     f"gold ranked first {b} {_pct(ch['base']['share_gold_first'])}, "
                     f"{r} {_pct(ch['rl']['share_gold_first'])}; {ch['base']['n_distractors_mean']:.1f} distractors "
                     f"per fact, {ch['base']['n_without_distractors']} facts without any")
    for state, s in summary["logp_shift"].items():
        lines.append(f"- median \u0394 log p(gold), {b} {state}: {_est(s['median'])} (n = {s['n']}, "
                     f"{s['n_nonfinite']} non-finite)")
    if summary.get("entropy"):
        e = summary["entropy"]
        lines.append(f"- answer entropy (nats): {b} {_est(e['base'])}, {r} {_est(e['rl'])}, change {_est(e['change'])}")
    if summary.get("pass_at_k"):
        lines.append(f"- pass@k crossing (first k where {b} catches up): {summary['pass_at_k']['crossing_k']}")
    for crit, sup in summary["support"].items():
        if sup is not None:
            ratios = ", ".join(f"{k} {'n/a' if sup[k] is None else f'{sup[k]:.3f}'}" for k in ("SRR", "NDR", "SDS", "NSCR"))
            lines.append(f"- support ({crit}): P {sup['P']}, S {sup['S']}, E {sup['E']}, O {sup['O']}; {ratios}")
    lines += ["", f"## Transitions ({summary['criterion']}; count and row share)", "",
              *_matrix_md(summary["transitions"], b, r), ""]
    lines += _formats_md(summary.get("formats"), b, r, summary)
    lines += _exposure_md(summary.get("exposure"), b, r)
    if figures:
        lines += ["## Figures", "", *[f"- [{name}](figures/{name}.png) ([pdf](figures/{name}.pdf))" for name in figures], ""]
    return "\n".join(lines)


def load_compare_run(run_dir: str | os.PathLike[str]) -> CompareRun:
    """Read a compare run directory back (facts, transitions, summary, config, trajectory)."""
    run_dir = Path(run_dir)
    if not (run_dir / "summary.json").exists():
        raise FileNotFoundError(f"{run_dir} is not a compare run directory (no summary.json)")
    trajectory = run_dir / "trajectory.csv"
    return CompareRun(
        run_dir=run_dir,
        facts=pd.read_parquet(run_dir / "facts.parquet"),
        transitions=pd.read_csv(run_dir / "transitions.csv"),
        summary=json.loads((run_dir / "summary.json").read_text(encoding="utf-8")),
        config=yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")) or {},
        trajectory=pd.read_csv(trajectory) if trajectory.exists() else None,
    )
