"""Figures of a comparison, in one paper style, from tables alone (never a model).

Each ``plot_*`` function takes DataFrames and returns a ``matplotlib.figure.Figure``
built without pyplot (so nothing opens a window and no global figure registry
fills up; notebooks display the returned figure). :func:`save_figure` writes
PNG (dpi 200) and PDF atomically; :func:`draw_all` re-draws every figure of a
compare run directory from its ``facts.parquet``, ``transitions.csv``,
``summary.json`` and ``trajectory.csv`` (backs ``massshift figures DIR``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib as mpl
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from massshift.analysis.gains import GAIN_KINDS
from massshift.rundir import atomic_path
from massshift.score.schema import STATES

logger = logging.getLogger(__name__)

STATE_COLORS: dict[str, str] = dict(zip(STATES, ("#0072B2", "#E69F00", "#999999")))
"""One colour per state (Okabe-Ito, colour-blind safe), used by every figure."""

PAPER_RC: dict[str, Any] = {
    "font.size": 8, "axes.titlesize": 9, "axes.labelsize": 8, "xtick.labelsize": 7, "ytick.labelsize": 7,
    "legend.fontsize": 7, "legend.title_fontsize": 7, "legend.frameon": False, "axes.spines.top": False, "axes.spines.right": False,
    "savefig.dpi": 200, "pdf.fonttype": 42, "ps.fonttype": 42, "lines.linewidth": 1.4,
}
DPI = 200
FORMATS: tuple[str, ...] = ("png", "pdf")
SINGLE = (3.4, 2.6)  # inches: one column of a two-column paper
WIDE = (4.6, 3.0)


@contextlib.contextmanager
def paper_style() -> Iterator[None]:
    """The project's figure style (seaborn ``ticks`` + ``paper`` context + ``PAPER_RC``), scoped."""
    rc = {**sns.axes_style("ticks"), **sns.plotting_context("paper"), **PAPER_RC}
    with mpl.rc_context(rc):
        yield


def _figure(size: tuple[float, float] = SINGLE) -> tuple[Figure, Any]:
    fig = Figure(figsize=size, layout="constrained")
    return fig, fig.subplots()


def _need(df: pd.DataFrame, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what} needs column(s) {', '.join(missing)} (a merged facts table from write_compare_report)")


def plot_transition_heatmap(
    counts: pd.DataFrame, base_label: str = "base", rl_label: str = "rl", title: str | None = None
) -> Figure:
    """3 x 3 heatmap: colour = row share, each cell annotated with its count and row percentage."""
    values = counts.reindex(index=list(STATES), columns=list(STATES)).fillna(0).to_numpy(dtype=float)
    totals = values.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = np.where(totals > 0, values / np.where(totals > 0, totals, 1), np.nan)
    notes = np.array([
        [f"{int(v)}\n({s:.0%})" if np.isfinite(s) else f"{int(v)}" for v, s in zip(rv, rs)]
        for rv, rs in zip(values, shares)
    ])
    with paper_style():
        fig, ax = _figure(SINGLE)
        sns.heatmap(
            pd.DataFrame(shares, index=STATES, columns=STATES), annot=notes, fmt="", cmap="Blues", vmin=0, vmax=1,
            linewidths=0.5, linecolor="white", cbar_kws={"label": f"share of {base_label} state"}, ax=ax,
        )
        ax.set_xlabel(f"{rl_label} state")
        ax.set_ylabel(f"{base_label} state")
        ax.set_xticklabels([s.replace("-", "-\n") for s in STATES], rotation=0)
        ax.set_yticklabels([f"{s}\n(n={int(t)})" for s, t in zip(STATES, totals[:, 0])], rotation=0)
        ax.set_title(title or f"Fact transitions {base_label} \u2192 {rl_label}")
    return fig


def _finite_logp(merged: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    _need(merged, ("logp_gold_base", "logp_gold_rl", "state_base"), "this figure")
    lb = merged["logp_gold_base"].to_numpy(dtype=float)
    lr = merged["logp_gold_rl"].to_numpy(dtype=float)
    ok = np.isfinite(lb) & np.isfinite(lr)
    data = pd.DataFrame({
        "logp_base": lb[ok], "logp_rl": lr[ok], "shift": lr[ok] - lb[ok],
        "base_state": merged["state_base"].to_numpy(dtype=object)[ok],
    })
    return data, int((~ok).sum())


def plot_logp_scatter(
    merged: pd.DataFrame, eps: float | None = None, base_label: str = "base", rl_label: str = "rl"
) -> Figure:
    """log p(gold) under base vs RL, coloured by base state, with the diagonal (and log eps lines)."""
    data, dropped = _finite_logp(merged)
    with paper_style():
        fig, ax = _figure(WIDE)
        sns.scatterplot(
            data=data, x="logp_base", y="logp_rl", hue="base_state", hue_order=list(STATES), palette=STATE_COLORS,
            s=8, alpha=0.6, linewidth=0, ax=ax,
        )
        if len(data):
            lo = float(min(data["logp_base"].min(), data["logp_rl"].min()))
            ax.plot([lo, 0.0], [lo, 0.0], color="black", linewidth=0.8, linestyle="--", label="no change")
        if eps is not None:
            ax.axvline(math.log(eps), color="grey", linewidth=0.6, linestyle=":")
            ax.axhline(math.log(eps), color="grey", linewidth=0.6, linestyle=":", label="log eps")
        ax.set_xlabel(f"log p(gold), {base_label}")
        ax.set_ylabel(f"log p(gold), {rl_label}")
        ax.legend(title=f"{base_label} state", loc="upper left", bbox_to_anchor=(1.0, 1.0))
        ax.set_title("Probability of the correct answer" + (f"\n({dropped} non-finite not shown)" if dropped else ""))
    return fig


def plot_logp_shift(merged: pd.DataFrame, base_label: str = "base", rl_label: str = "rl") -> Figure:
    """Change of log p(gold) (RL minus base) per base state: box plot with the facts as points."""
    data, dropped = _finite_logp(merged)
    with paper_style():
        fig, ax = _figure(SINGLE)
        kw = {"data": data, "x": "base_state", "y": "shift", "order": list(STATES), "ax": ax}
        sns.boxplot(**kw, hue="base_state", hue_order=list(STATES), palette=STATE_COLORS, showfliers=False,
                    width=0.55, legend=False, boxprops={"alpha": 0.5})
        # the points, with a seeded jitter (seaborn's jitter draws from numpy's global generator)
        pos = {state: i for i, state in enumerate(STATES)}
        x = data["base_state"].map(pos).to_numpy(dtype=float)
        x = x + np.random.default_rng(0).uniform(-0.2, 0.2, size=len(x))
        ax.scatter(x, data["shift"], s=2.0, color="black", alpha=0.35, linewidths=0)
        ax.axhline(0.0, color="black", linewidth=0.6)
        ax.set_xlabel(f"{base_label} state")
        ax.set_ylabel(f"\u0394 log p(gold) ({rl_label} \u2212 {base_label})")
        ax.set_title("Shift of log p(gold)" + (f"\n({dropped} non-finite not shown)" if dropped else ""))
    return fig


def plot_pass_at_k(curves: Mapping[str, pd.DataFrame] | pd.DataFrame, crossing: int | None = None) -> Figure:
    """pass@k against k (log2 axis) per model. ``curves``: label -> (k, pass_at_k), or tidy with ``model``."""
    if isinstance(curves, pd.DataFrame):
        tidy = curves
    else:
        tidy = pd.concat([c.assign(model=label) for label, c in curves.items()], ignore_index=True)
    _need(tidy, ("model", "k", "pass_at_k"), "plot_pass_at_k")
    with paper_style():
        fig, ax = _figure(SINGLE)
        sns.lineplot(data=tidy, x="k", y="pass_at_k", hue="model", marker="o", markersize=3, errorbar=None, ax=ax)
        ax.set_xscale("log", base=2)
        if crossing is not None:
            ax.axvline(crossing, color="grey", linewidth=0.6, linestyle=":", label=f"crossing k={crossing}")
            ax.legend()
        ax.set_ylim(0, 1)
        ax.set_xlabel("k (samples)")
        ax.set_ylabel("pass@k")
        ax.set_title("pass@k (unbiased estimator)")
    return fig


def _shares_table(merged: pd.DataFrame, base_label: str, rl_label: str) -> pd.DataFrame:
    _need(merged, ("state_base", "state_rl"), "plot_state_shares")
    rows = {}
    for label, col in ((base_label, "state_base"), (rl_label, "state_rl")):
        counts = merged[col].value_counts().reindex(list(STATES), fill_value=0)
        rows[label] = counts / max(int(counts.sum()), 1)
    return pd.DataFrame(rows).T


def plot_state_shares(merged: pd.DataFrame, base_label: str = "base", rl_label: str = "rl") -> Figure:
    """Stacked bars: share of facts in each state, base vs RL."""
    return _stacked(_shares_table(merged, base_label, rl_label), "State of each fact")


def _stacked(table: pd.DataFrame, title: str) -> Figure:
    with paper_style():
        fig, ax = _figure(SINGLE)
        bottom = np.zeros(len(table))
        x = np.arange(len(table))
        for state in STATES:
            vals = table[state].to_numpy(dtype=float)
            ax.bar(x, vals, bottom=bottom, color=STATE_COLORS[state], label=state, width=0.6)
            for xi, v, b in zip(x, vals, bottom):
                if v >= 0.06:
                    ax.text(xi, b + v / 2, f"{v:.0%}", ha="center", va="center", fontsize=6, color="white")
            bottom += vals
        ax.set_xticks(x, [str(i) for i in table.index], rotation=30 if len(table) > 4 else 0)
        ax.set_ylim(0, 1)
        ax.set_ylabel("share of facts")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
        ax.set_title(title)
    return fig


def plot_redistribution_vs_eps(
    sensitivity: pd.DataFrame, eps: float | None = None, sampling_share: float | None = None
) -> Figure:
    """Share of newly greedy-correct facts that were tail-correct in the base, against eps.

    ``eps`` marks the configured threshold; ``sampling_share`` (the same share under
    the sampling criterion, which has no eps) is drawn as a horizontal line.
    """
    _need(sensitivity, ("eps", "share_tail"), "plot_redistribution_vs_eps")
    with paper_style():
        fig, ax = _figure(SINGLE)
        ax.plot(sensitivity["eps"], sensitivity["share_tail"], marker="o", markersize=3, color=STATE_COLORS[STATES[1]])
        ax.set_xscale("log")
        if eps is not None:
            ax.axvline(eps, color="grey", linewidth=0.6, linestyle=":", label=f"eps = {eps:.3g}")
        if sampling_share is not None:
            ax.axhline(sampling_share, color="black", linewidth=0.8, linestyle="--", label="sampling criterion")
        if eps is not None or sampling_share is not None:
            ax.legend(loc="lower left")
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("eps (probability threshold of tail-correct)")
        ax.set_ylabel("share from tail-correct")
        ax.set_title("Redistribution share vs eps")
    return fig


def plot_trajectory(shares: pd.DataFrame) -> Figure:
    """State shares over checkpoints (a tidy table from ``transitions.state_shares``)."""
    _need(shares, ("checkpoint", "state", "share"), "plot_trajectory")
    order = list(dict.fromkeys(shares["checkpoint"].astype(str)))
    with paper_style():
        fig, ax = _figure(WIDE)
        for state in STATES:
            part = shares[shares["state"] == state]
            part = part.set_index(part["checkpoint"].astype(str)).reindex(order)
            ax.plot(np.arange(len(order)), part["share"].to_numpy(dtype=float), marker="o", markersize=3,
                    color=STATE_COLORS[state], label=state)
        ax.set_xticks(np.arange(len(order)), order, rotation=30 if len(order) > 4 else 0)
        ax.set_ylim(0, 1)
        ax.set_xlabel("checkpoint")
        ax.set_ylabel("share of facts")
        ax.legend()
        ax.set_title("State shares over training")
    return fig


def plot_exposure_shares(
    rows: pd.DataFrame, criterion: str, base_label: str = "base", rl_label: str = "rl"
) -> Figure:
    """State shares by exposure (popularity) bucket, base and RL side by side, under one criterion.

    ``rows`` is ``summary["exposure"]["rows"]`` as a table (``bucket, model, criterion, n`` and
    one share column per state); buckets keep their order of appearance, empty buckets are left out.
    """
    _need(rows, ("bucket", "model", "criterion", "n", *STATES), "plot_exposure_shares")
    part = rows[(rows["criterion"] == criterion) & (rows["n"] > 0)]
    buckets = list(dict.fromkeys(part["bucket"].astype(str)))
    with paper_style():
        fig = Figure(figsize=WIDE, layout="constrained")
        axes = fig.subplots(1, 2, sharey=True)
        for ax, (model, label) in zip(axes, (("base", base_label), ("rl", rl_label))):
            table = part[part["model"] == model].set_index(part[part["model"] == model]["bucket"].astype(str))
            table = table.reindex(buckets)
            bottom = np.zeros(len(buckets))
            x = np.arange(len(buckets))
            for state in STATES:
                vals = table[state].to_numpy(dtype=float)
                ax.bar(x, vals, bottom=bottom, color=STATE_COLORS[state], label=state, width=0.7)
                bottom += vals
            ax.set_xticks(x, [f"{b}\nn={int(n)}" for b, n in zip(buckets, table["n"])], fontsize=5.5)
            ax.set_ylim(0, 1)
            ax.set_xlabel("exposure")
            ax.set_title(label)
        axes[0].set_ylabel("share of facts")
        axes[1].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
        fig.suptitle(f"State by exposure ({criterion})", fontsize=9)
    return fig


def plot_gold_rank(merged: pd.DataFrame, base_label: str = "base", rl_label: str = "rl") -> Figure:
    """Distribution of the gold answer's rank among gold + distractors (1 = first), base vs RL."""
    _need(merged, ("gold_rank_base", "gold_rank_rl"), "plot_gold_rank")
    ranks = {label: merged[f"gold_rank_{m}"].to_numpy(dtype=float) for m, label in (("base", base_label), ("rl", rl_label))}
    finite = np.concatenate([r[np.isfinite(r)] for r in ranks.values()])
    top = int(finite.max()) if len(finite) else 1
    bins = np.arange(0.5, top + 1.5)
    with paper_style():
        fig, ax = _figure(SINGLE)
        for (label, r), color in zip(ranks.items(), ("#555555", STATE_COLORS[STATES[0]])):
            r = r[np.isfinite(r)]
            ax.hist(r, bins=bins, weights=np.full(len(r), 1 / max(len(r), 1)), histtype="step", linewidth=1.4,
                    color=color, label=f"{label} (median {np.median(r):.0f})" if len(r) else label)
        ax.xaxis.set_major_locator(mpl.ticker.MaxNLocator(integer=True))
        ax.set_xlabel("rank of the gold answer among gold + distractors")
        ax.set_ylabel("share of facts")
        ax.legend()
        ax.set_title("Gold rank among distractors")
    return fig


KIND_COLORS = {"format": "#9e9e9e", "guess": "#d95f02", "recall": "#1b9e77", "acquisition": "#7570b3"}


def gain_kinds_figure(facts: pd.DataFrame, columns: Sequence[str] | None = None) -> Figure:
    """Stacked bars: the gained facts of each checkpoint (``gain_kind`` columns of facts.parquet) by kind."""
    cols = list(columns or [c for c in facts.columns if c == "gain_kind" or c.startswith("gain_kind_")])
    labels = [c.removeprefix("gain_kind_") if c != "gain_kind" else "headline" for c in cols]
    with paper_style():
        fig = Figure(figsize=(3.4, 2.6), layout="constrained")
        ax = fig.subplots()
        bottom = [0] * len(cols)
        for kind in GAIN_KINDS:
            counts = [int((facts[c] == kind).sum()) for c in cols]
            ax.bar(labels, counts, bottom=bottom, color=KIND_COLORS[kind], label=kind)
            bottom = [b + n for b, n in zip(bottom, counts)]
        ax.set_ylabel("newly greedy-correct facts")
        ax.set_title("What kind of gain")
        ax.legend(frameon=False, fontsize="small")
    return fig


def save_figure(
    fig: Figure, out_dir: str | os.PathLike[str], name: str, formats: Sequence[str] = FORMATS
) -> list[Path]:
    """Write ``name.png`` (dpi 200) and ``name.pdf`` into ``out_dir`` atomically; return the paths."""
    paths = []
    for ext in formats:
        path = Path(out_dir) / f"{name}.{ext}"
        meta = {"CreationDate": None} if ext == "pdf" else {"Software": None}  # reproducible bytes
        with paper_style(), atomic_path(path) as tmp:
            fig.savefig(tmp, format=ext, dpi=DPI, metadata=meta)  # constrained layout already fits
        paths.append(path)
    return paths


def figures_of(run_dir: str | os.PathLike[str]) -> dict[str, Figure]:
    """Every figure of a compare run directory, drawn from its tables, keyed by file name."""
    run_dir = Path(run_dir)
    merged = pd.read_parquet(run_dir / "facts.parquet")
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    transitions = pd.read_csv(run_dir / "transitions.csv")
    labels = summary.get("labels") or {"base": "base", "rl": "rl"}
    b, r = labels["base"], labels["rl"]
    eps = summary.get("eps")
    figs: dict[str, Figure] = {}
    for crit in transitions["criterion"].unique():
        counts = transitions[transitions["criterion"] == crit].pivot(index="base_state", columns="rl_state", values="count")
        name = "transitions" if crit == summary.get("criterion") else f"transitions_{crit}"
        figs[name] = plot_transition_heatmap(counts, b, r, title=f"Fact transitions {b} \u2192 {r} ({crit})")
    figs["logp_scatter"] = plot_logp_scatter(merged, eps, b, r)
    figs["logp_shift"] = plot_logp_shift(merged, b, r)
    figs["state_shares"] = plot_state_shares(merged, b, r)
    if "gain_kind" in merged.columns and merged["gain_kind"].notna().any():
        figs["gain_kinds"] = gain_kinds_figure(merged)
    sampled = (summary.get("redistribution_by_criterion") or {}).get("sampling")
    figs["redistribution_vs_eps"] = plot_redistribution_vs_eps(
        pd.DataFrame(summary["sensitivity"]), eps, sampled["share_tail"]["value"] if sampled else None
    )
    if summary.get("pass_at_k"):
        curves = {labels[m]: pd.DataFrame(summary["pass_at_k"][m]) for m in ("base", "rl")}
        figs["pass_at_k"] = plot_pass_at_k(curves, summary["pass_at_k"].get("crossing_k"))
    # the chance figures come with distractor columns only, so runs without them draw the figure set
    # they always drew (notebooks/reproduce_paper_figures.ipynb lists that set cell by cell)
    if "gold_rank_base" in merged.columns and "gold_rank_rl" in merged.columns:
        exposure = summary.get("exposure")
        if exposure and exposure.get("rows"):
            figs["exposure_shares"] = plot_exposure_shares(
                pd.DataFrame(exposure["rows"]), summary.get("criterion", "logprob"), b, r)
        figs["gold_rank"] = plot_gold_rank(merged, b, r)
    if (run_dir / "trajectory.csv").exists():
        figs["trajectory"] = plot_trajectory(pd.read_csv(run_dir / "trajectory.csv"))
    return figs


def draw_all(run_dir: str | os.PathLike[str], formats: Sequence[str] = FORMATS) -> list[Path]:
    """Re-draw every figure of a compare run directory into ``run_dir/figures`` from its tables.

    Returns the files written, in drawing order, one per figure and format (a
    figure's name is ``path.stem``). ``formats`` defaults to PNG and PDF; the PDF
    (font embedding) is the slow part.
    """
    run_dir = Path(run_dir)
    figs = figures_of(run_dir)
    out = [path for name, fig in figs.items() for path in save_figure(fig, run_dir / "figures", name, formats)]
    logger.info("drew %d figures into %s", len(figs), run_dir / "figures")
    return out
