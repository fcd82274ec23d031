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

from massshift.analysis.controls import control_summary
from massshift.analysis.states import (
    StateConfig,
    add_state_columns,
    auto_criterion,
    has_distractors,
    has_samples,
)
from massshift.analysis.statistics import Bootstrap, StatsConfig, model_states, summarise, transition_table
from massshift.analysis.transitions import merge_models, state_shares
from massshift.configio import help_field
from massshift.data.controls import split_controls
from massshift.report import plots
from massshift.report.kinds import knowledge
from massshift.report.markdown import render_report
from massshift.rundir import init_run_dir, write_csv, write_json, write_parquet, write_text
from massshift.score.formats import format_shift, format_summary
from massshift.score.schema import ScoreTableError, check_score_table

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
    train_facts: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """Compare a base score table with one RL table (or several, in training order) and write a run dir.

    ``seed`` overrides ``config.stats.seed``. ``extra_config`` (checkpoints, facts file,
    scoring settings) is written into config.yaml beside the compare settings.
    ``figures=False`` skips drawing (a few seconds per figure on a slow CPU); the
    figures can be drawn later from the run dir with ``plots.draw_all``.
    ``train_facts`` (the RL training facts, when known) set the constant-answer baseline; without them it
    is leave-one-out over the compared facts. Control rows (fact ids ``control:...``, ``data.controls``)
    are kept out of every number but the controls' own summary.
    Returns the summary dict (the content of summary.json).
    """
    config = config or CompareConfig()
    if seed is not None:
        config = dataclasses.replace(config, stats=dataclasses.replace(config.stats, seed=seed))
    stats_cfg = config.stats
    rl_list = _rl_list(rl_scores, config.rl_label)
    if config.base_label in {label for label, _ in rl_list}:
        raise ValueError(f"an RL checkpoint label equals the base label {config.base_label!r}; rename one")
    checked_base, base_ctrl = split_controls(_checked(base_scores, f"base score table ({config.base_label})"))
    split_rl = [(label, split_controls(_checked(df, f"rl score table ({label})"))) for label, df in rl_list]
    checked_rl = [(label, real) for label, (real, _) in split_rl]
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
    found, columns = knowledge(merged_all, state_cfg, stats_cfg, config.base_label, train_facts,
                               summary["formats"]["match_mode"])
    summary.update(found)
    for warning in found["collapse_warnings"]:
        logger.warning("%s", warning)
    merged = merged.assign(**columns)
    summary["controls"] = control_summary({config.base_label: checked_base, headline_label: checked_rl[-1][1]},
                                          {config.base_label: base_ctrl, headline_label: split_rl[-1][1][1]},
                                          state_cfg)

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
