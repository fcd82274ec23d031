"""What the notebooks in ``notebooks/`` call: tidy views of run directories, read from disk.

A notebook holds library calls only; every table it shows and every input it
hands to ``massshift.report.plots`` comes from here. Three groups:

- **A compare run** (``report.load_compare_run``): :func:`headline_table`,
  :func:`transition_pivot`, :func:`transition_text`, :func:`filter_transitions`,
  and the inputs of each paper figure (:func:`labels`, :func:`pass_at_k_curves`,
  :func:`sensitivity_table`, :func:`sampling_share`), assembled by
  :func:`paper_figures` exactly as ``plots.draw_all`` draws ``figures/``.
- **A GRPO run** (``train.grpo.train_grpo``'s ``OUT``): :func:`read_train_log`,
  :func:`saved_checkpoints`, :func:`training_summary`, :func:`plot_training_diagnostics`.
- **Score tables of several checkpoints**: :func:`find_score_tables`,
  :func:`load_score_tables`, :func:`checkpoint_state_shares` (for
  ``plots.plot_trajectory``).

Like every analysis module this one reads tables and never imports torch.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from massshift.analysis.states import StateConfig, assign_states
from massshift.analysis.transitions import state_shares
from massshift.report import plots
from massshift.report.compare import CompareRun
from massshift.score.schema import STATES, ScoreTableError

logger = logging.getLogger(__name__)

PathsLike = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]

# ----------------------------------------------------------------------------- a compare run


def labels(summary: Mapping[str, Any]) -> tuple[str, str]:
    """The (base, RL) labels of a compare run's summary (``("base", "rl")`` when absent)."""
    lab = summary.get("labels") or {}
    return str(lab.get("base", "base")), str(lab.get("rl", "rl"))


def _row(quantity: str, est: Any) -> dict[str, Any]:
    """One headline row from a number or a ``{"value", "ci"}`` estimate (None becomes NaN)."""
    if isinstance(est, Mapping):
        lo, hi = est.get("ci") or (None, None)
        value = est.get("value")
    else:
        value, lo, hi = est, None, None
    nan = float("nan")
    return {"quantity": quantity, "value": nan if value is None else float(value),
            "ci_lo": nan if lo is None else float(lo), "ci_hi": nan if hi is None else float(hi)}


def headline_table(summary: Mapping[str, Any]) -> pd.DataFrame:
    """The headline numbers of a comparison, one row each: ``quantity, value, ci_lo, ci_hi``.

    Accuracies of both models, absolute and relative gain, the net change in
    greedy-correct facts, McNemar's b, c and p-value, the newly greedy-correct
    facts and where they were in the base, and the redistribution share (under
    the run's criterion, and under ``sampling`` when that differs and exists).
    Shares are fractions (0.25, not 25%); counts and p-values have no interval (NaN).
    """
    b, r = labels(summary)
    acc, gain, mc, red = summary["accuracy"], summary["gain"], summary["mcnemar"], summary["redistribution"]
    rows = [
        _row("facts", summary["n_facts"]),
        _row(f"greedy accuracy, {b}", acc["base"]),
        _row(f"greedy accuracy, {r}", acc["rl"]),
        _row("absolute gain", gain["absolute"]),
        _row("relative gain", gain["relative"]),
        _row("net greedy-correct facts", summary["churn"]["net"]),
        _row(f"McNemar b ({b} only correct)", mc["b"]),
        _row(f"McNemar c ({r} only correct)", mc["c"]),
        _row("McNemar p-value", mc["p_value"]),
        _row("newly greedy-correct facts", red["n_new_greedy"]),
        _row(f"  of which tail-correct in {b}", red["from_tail"]),
        _row(f"  of which absent in {b}", red["from_absent"]),
        _row(f"redistribution share ({red['criterion']})", red["share_tail"]),
    ]
    sampled = (summary.get("redistribution_by_criterion") or {}).get("sampling")
    if sampled is not None and red["criterion"] != "sampling":
        rows.append(_row("redistribution share (sampling)", sampled["share_tail"]))
    return pd.DataFrame(rows, columns=["quantity", "value", "ci_lo", "ci_hi"])


def transition_pivot(transitions: pd.DataFrame, criterion: str = "logprob", value: str = "count") -> pd.DataFrame:
    """The 3 x 3 matrix of one criterion from ``transitions.csv``: rows base state, columns RL state.

    ``value`` is ``count``, ``row_share``, ``row_share_lo`` or ``row_share_hi``; states in
    ``schema.STATES`` order.
    """
    part = transitions[transitions["criterion"] == criterion]
    if part.empty:
        have = sorted(transitions["criterion"].unique())
        raise ValueError(f"no transitions under criterion {criterion!r}; this run has {have}")
    if value not in part.columns:
        raise ValueError(f"transitions.csv has no column {value!r}; use count, row_share, row_share_lo or row_share_hi")
    table = part.pivot(index="base_state", columns="rl_state", values=value)
    return table.reindex(index=list(STATES), columns=list(STATES))


def transition_text(transitions: pd.DataFrame, criterion: str = "logprob") -> pd.DataFrame:
    """The 3 x 3 matrix as text cells ``count (row share [lo, hi])``, for display."""
    count, share = (transition_pivot(transitions, criterion, v) for v in ("count", "row_share"))
    lo, hi = (transition_pivot(transitions, criterion, v) for v in ("row_share_lo", "row_share_hi"))

    def cell(b: str, r: str) -> str:
        s = share.loc[b, r]
        if not np.isfinite(s):
            return f"{int(count.loc[b, r])}"
        ci = f" [{lo.loc[b, r]:.0%}, {hi.loc[b, r]:.0%}]" if np.isfinite(lo.loc[b, r]) else ""
        return f"{int(count.loc[b, r])} ({s:.0%}{ci})"

    text = pd.DataFrame([[cell(b, r) for r in STATES] for b in STATES], index=list(STATES), columns=list(STATES))
    text.index.name, text.columns.name = "base state", "rl state"
    return text


def filter_transitions(
    merged: pd.DataFrame, from_state: str, to_state: str, criterion: str | None = None
) -> pd.DataFrame:
    """The facts that went from ``from_state`` (base) to ``to_state`` (RL), largest log-prob gain first.

    ``merged`` is a compare run's ``facts.parquet``; ``criterion`` None uses the run's
    states (``state_base`` / ``state_rl``), else ``logprob`` or ``sampling``. Columns:
    ``fact_id, question, answers``, the greedy outputs ``greedy_base, greedy_rl``,
    ``logp_gold_base, logp_gold_rl`` and ``delta_logp`` (RL minus base; NaN unless both
    are finite, sorted last), plus ``n_correct_base, n_correct_rl`` when samples exist.
    """
    for state in (from_state, to_state):
        if state not in STATES:
            raise ValueError(f"unknown state {state!r}; states are {STATES}")
    suffix = "" if criterion is None else f"_{criterion}"
    cols = (f"state{suffix}_base", f"state{suffix}_rl")
    missing = [c for c in cols if c not in merged.columns]
    if missing:
        raise ValueError(f"the facts table has no {', '.join(missing)}: criterion {criterion!r} was not computed "
                         "for this run (sampling needs samples under both models)")
    keep = merged[(merged[cols[0]] == from_state) & (merged[cols[1]] == to_state)]
    lb, lr = (keep[f"logp_gold_{m}"].to_numpy(dtype=float) for m in ("base", "rl"))
    with np.errstate(invalid="ignore"):
        delta = np.where(np.isfinite(lb) & np.isfinite(lr), lr - lb, np.nan)
    columns = ["fact_id", "question", "answers", "greedy_base", "greedy_rl", "logp_gold_base", "logp_gold_rl"]
    columns += [c for c in ("n_correct_base", "n_correct_rl") if c in keep.columns]
    out = keep[columns].assign(delta_logp=delta)
    return out.sort_values("delta_logp", ascending=False, na_position="last", kind="stable").reset_index(drop=True)


def pass_at_k_curves(summary: Mapping[str, Any]) -> dict[str, pd.DataFrame] | None:
    """label -> ``(k, pass_at_k)`` for both models, from the summary; None when the run has no samples."""
    pk = summary.get("pass_at_k")
    if not pk:
        return None
    b, r = labels(summary)
    return {b: pd.DataFrame(pk["base"]), r: pd.DataFrame(pk["rl"])}


def sensitivity_table(summary: Mapping[str, Any]) -> pd.DataFrame:
    """Redistribution share against eps (``stats.sensitivity``, as stored in the summary)."""
    return pd.DataFrame(summary["sensitivity"])


def sampling_share(summary: Mapping[str, Any]) -> float | None:
    """The redistribution share under the sampling criterion (None without samples)."""
    sampled = (summary.get("redistribution_by_criterion") or {}).get("sampling")
    return sampled["share_tail"]["value"] if sampled else None


def paper_figures(run: CompareRun) -> dict[str, Figure]:
    """Every figure of a compare run, keyed by its file name in ``figures/`` (``plots.figures_of``)."""
    return plots.figures_of(run.run_dir)


# ----------------------------------------------------------------------------- a GRPO run

TRAINING_PANELS: tuple[tuple[str, str], ...] = (
    ("reward_mean", "reward (mean \u00b1 std)"),
    ("zero_var_share", "zero-variance groups (share)"),
    ("kl", "KL to the initial policy"),
    ("entropy", "entropy (nats per token)"),
    ("completion_len", "completion length (tokens)"),
    ("eval_accuracy", "held-out greedy accuracy"),
)
"""(column of train_log.jsonl, panel title) of :func:`plot_training_diagnostics`, in drawing order."""


def read_train_log(run_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """``train_log.jsonl`` of a training run (a run folder or the file itself), one row per logged step."""
    path = Path(run_dir)
    path = path / "train_log.jsonl" if path.is_dir() else path
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; a GRPO or SFT run directory holds train_log.jsonl")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not rows:
        raise ValueError(f"{path} is empty: the run logged no step")
    return pd.DataFrame(rows).sort_values("step", kind="stable").reset_index(drop=True)


def saved_checkpoints(run_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """The checkpoints a training run saved (``OUT/checkpoints/step-N``) and its final model: ``name, step, path``.

    Sorted by step, ``final`` (step NaN) last; empty when the run saved nothing.
    """
    run_dir = Path(run_dir)
    rows = [{"name": p.name, "step": float(m.group(1)), "path": p}
            for p in (run_dir / "checkpoints").glob("step-*") if (m := re.fullmatch(r"step-(\d+)", p.name))]
    rows.sort(key=lambda row: row["step"])
    if (run_dir / "final").is_dir():
        rows.append({"name": "final", "step": float("nan"), "path": run_dir / "final"})
    return pd.DataFrame(rows, columns=["name", "step", "path"])


def training_summary(log: pd.DataFrame, window: int = 5) -> pd.DataFrame:
    """Per diagnostic of ``TRAINING_PANELS`` (and ``greedy_reward``): logged steps, first and last value.

    ``first`` and ``last`` are means over the first and last ``window`` steps that logged it, or
    over half of them when fewer than ``2 * window`` did (so the two never share a step; with a
    single logged value both are that value). Columns: ``metric, n_logged, first, last``;
    metrics never logged (KL with beta = 0) are left out.
    """
    rows = []
    for col in [c for c, _ in TRAINING_PANELS] + ["greedy_reward"]:
        if col not in log.columns:
            continue
        values = pd.to_numeric(log[col], errors="coerce").dropna()
        if values.empty:
            continue
        w = max(1, min(window, len(values) // 2))
        rows.append({"metric": col, "n_logged": len(values), "first": float(values.head(w).mean()),
                     "last": float(values.tail(w).mean())})
    return pd.DataFrame(rows, columns=["metric", "n_logged", "first", "last"])


def plot_training_diagnostics(log: pd.DataFrame, smooth: int = 5) -> Figure:
    """One panel per ``TRAINING_PANELS`` entry against step; a diagnostic never logged says so.

    Per-step values are thin, their ``smooth``-step moving average thick; the reward
    panel shades mean +/- std and dashes the greedy answer's reward (``greedy_reward``).
    """
    with plots.paper_style():
        fig = Figure(figsize=(7.0, 4.2), layout="constrained")
        axes = fig.subplots(2, 3).ravel()
        for ax, (col, title) in zip(axes, TRAINING_PANELS):
            ax.set_title(title)
            ax.set_xlabel("step")
            data = log.dropna(subset=[col]) if col in log.columns else log.iloc[:0]
            if data.empty:
                ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes)
                ax.set_xticks([])
                ax.set_yticks([])
                continue
            x, y = data["step"].to_numpy(dtype=float), data[col].to_numpy(dtype=float)
            if col == "eval_accuracy":
                ax.plot(x, y, marker="o", markersize=3)
                ax.set_ylim(0, 1)
                continue
            ax.plot(x, y, linewidth=0.7, alpha=0.5, color="C0", label="per step")
            ax.plot(x, pd.Series(y).rolling(smooth, min_periods=1).mean(), color="C0", label=f"{smooth}-step mean")
            if col == "reward_mean" and "reward_std" in data.columns:
                sd = data["reward_std"].to_numpy(dtype=float)
                ax.fill_between(x, y - sd, y + sd, color="C0", alpha=0.15, linewidth=0)
                if "greedy_reward" in data.columns and data["greedy_reward"].notna().any():
                    ax.plot(x, data["greedy_reward"].to_numpy(dtype=float), color="C1", linestyle="--",
                            linewidth=0.9, label="greedy answer")
                ax.legend(loc="best", fontsize=6)
            if col in ("reward_mean", "zero_var_share"):
                ax.set_ylim(-0.02, 1.02)
    return fig


# ----------------------------------------------------------------------------- checkpoints' score tables

def _natural_key(path: Path) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.stem)]


def find_score_tables(paths: PathsLike) -> list[tuple[str, Path]]:
    """(label, parquet path) of the score tables at ``paths``, in order; missing paths are logged and skipped.

    ``paths``: one path, a sequence, or one string with commas between paths. Each is a
    ``.parquet`` score table (label: its stem), a ``massshift score`` output folder
    (``scores.parquet`` inside; label: the folder name) or a folder of tables
    (each table in natural name order, ``step-2`` before ``step-10``). Labels must be unique.
    """
    if isinstance(paths, str):
        items: list[str | os.PathLike[str]] = [p for p in paths.split(",") if p.strip()]
    else:
        items = [paths] if isinstance(paths, os.PathLike) else list(paths)
    found: list[tuple[str, Path]] = []
    for item in items:
        path = Path(str(item).strip())
        if path.is_file():
            found.append((path.stem, path))
        elif (path / "scores.parquet").is_file():
            found.append((path.name, path / "scores.parquet"))
        elif path.is_dir():
            found += [(p.stem, p) for p in sorted(path.glob("*.parquet"), key=_natural_key)]
        else:
            logger.warning("no score table at %s (skipped)", path)
    names = [label for label, _ in found]
    if len(set(names)) != len(names):
        raise ValueError(f"score table labels must be unique, got {names}; rename the files or folders")
    return found


def load_score_tables(found: Sequence[tuple[str, str | os.PathLike[str]]]) -> dict[str, pd.DataFrame]:
    """label -> score table for each (label, path) of :func:`find_score_tables`, in order."""
    return {label: pd.read_parquet(path) for label, path in found}


def checkpoint_state_shares(tables: Mapping[str, pd.DataFrame], config: StateConfig | None = None) -> pd.DataFrame:
    """State shares per checkpoint (``transitions.state_shares``), states recomputed with ``config``.

    Every table must hold the same facts (shares over different facts do not compare);
    otherwise ``ScoreTableError`` names the first table that differs.
    """
    if not tables:
        raise ValueError("no score tables given")
    config = config or StateConfig()
    first_label, first = next(iter(tables.items()))
    ids = set(first["fact_id"].astype(str))
    for label, df in tables.items():
        other = set(df["fact_id"].astype(str))
        if other != ids:
            raise ScoreTableError(
                f"score table {label!r} holds different facts from {first_label!r} "
                f"({len(other - ids)} extra, {len(ids - other)} missing); score every checkpoint on one facts file")
    return state_shares({label: assign_states(df, config) for label, df in tables.items()})

