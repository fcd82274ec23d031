"""The attribution study's report: its figure (``figures/attribution.png``), the answer paragraph and
report.md, drawn from the tables of ``studies.attribution``."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from massshift.studies.attribution import BUCKET_COLORS


def plot_attribution(sizes: pd.DataFrame, gains: pd.DataFrame, runs: pd.DataFrame, loo: pd.DataFrame) -> Figure:
    """Training-bucket sizes, held-out gain by training bucket (mean and seed CI, seeds as dots), LOO drops."""
    from massshift.report.plots import paper_style

    with paper_style():
        fig = Figure(figsize=(7.2, 2.8), layout="constrained")
        ax_n, ax_g, ax_l = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1, 1.3, 1]})
        ax_n.bar(range(len(sizes)), sizes["n"], color=[BUCKET_COLORS[b] for b in sizes["bucket"]])
        for i, n in enumerate(sizes["n"]):
            ax_n.text(i, n, str(int(n)), ha="center", va="bottom", fontsize=6)
        ax_n.set_xticks(range(len(sizes)), list(sizes["bucket"]), rotation=30, ha="right", fontsize=6)
        ax_n.set(ylabel="training facts", title="bucket sizes (base, n samples)")
        bars = gains[gains["kind"].isin(["bucket", "mixed"])].reset_index(drop=True)
        labels = [b if k == "bucket" else "all mixed" for k, b in zip(bars["kind"], bars["bucket"])]
        colors = [BUCKET_COLORS.get(b, "#333333") if k == "bucket" else "#333333"
                  for k, b in zip(bars["kind"], bars["bucket"])]
        _bars_with_ci(ax_g, labels, bars["gain"], bars["ci_lo"], bars["ci_hi"], colors)
        for i, (k, b) in enumerate(zip(bars["kind"], bars["bucket"])):
            sel = runs[(runs["kind"] == k) & ((runs["bucket"].fillna("all")) == b)]
            ax_g.scatter(np.full(len(sel), i) + np.linspace(-0.15, 0.15, len(sel)), sel["gain"], s=6,
                         color="black", zorder=3)
        ax_g.set(ylabel="held-out greedy accuracy gain", title="GRPO on one bucket (equal size)")
        if len(loo):
            _bars_with_ci(ax_l, list(loo["bucket"]), loo["drop"], loo["ci_lo"], loo["ci_hi"],
                          [BUCKET_COLORS[b] for b in loo["bucket"]])
        ax_l.set(ylabel="gain lost when left out", title="leave one bucket out")
        for ax in (ax_g, ax_l):
            ax.axhline(0, color="black", lw=0.6)
    return fig


def _bars_with_ci(ax: Any, labels: list[str], mean: Any, lo: Any, hi: Any, colors: list[str]) -> None:
    mean, lo, hi = (np.asarray(v, dtype=float) for v in (mean, lo, hi))
    err = np.vstack([np.where(np.isfinite(lo), mean - lo, 0), np.where(np.isfinite(hi), hi - mean, 0)])
    ax.bar(range(len(labels)), mean, color=colors, yerr=err, capsize=2, error_kw={"lw": 0.8})
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=6)


def _fmt(x: Any, pct: bool = True) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{100 * x:+.1f}" if pct else f"{x:.3g}"


def answer_text(gains: pd.DataFrame, loo: pd.DataFrame, zero: pd.DataFrame, after: pd.DataFrame | None = None) -> str:
    """A few sentences that state what the runs show, from the tables (no claim beyond them)."""
    b = gains[gains["kind"] == "bucket"].sort_values("gain", ascending=False)
    if b.empty:
        return "No bucket run finished."
    top = b.iloc[0]
    lines = [f"Largest held-out gain from training on one bucket: **{top['bucket']}** "
             f"({_fmt(top['gain'])} points, 95% seed CI [{_fmt(top['ci_lo'])}, {_fmt(top['ci_hi'])}])."]
    if len(b) > 1:
        second = b.iloc[1]
        separated = math.isfinite(top["ci_lo"]) and math.isfinite(second["ci_hi"]) and top["ci_lo"] > second["ci_hi"]
        lines.append(f"Next: {second['bucket']} ({_fmt(second['gain'])}); the two seed CIs "
                     f"{'do not overlap' if separated else 'overlap, so the order of the top two is not established'}.")
    ina = b[b["bucket"] == "inaccessible"]
    if len(ina):
        r = ina.iloc[0]
        zs = zero[(zero["kind"] == "bucket") & (zero["bucket"] == "inaccessible")]
        groups = zs["groups"].sum() if len(zs) else 0
        share = float(zs["zero"].sum() / groups) if groups else math.nan
        text = (f"Inaccessible facts alone: gain {_fmt(r['gain'])} [{_fmt(r['ci_lo'])}, {_fmt(r['ci_hi'])}]; "
                f"{'n/a' if math.isnan(share) else f'{100 * share:.1f}%'} of their GRPO groups had zero reward "
                "variance (no gradient)")
        if groups and "zero_right" in zs and zs["zero_right"].notna().all():
            text += (f": {100 * zs['zero_wrong'].sum() / groups:.1f}% all wrong, "
                     f"{100 * zs['zero_right'].sum() / groups:.1f}% all right")
        lines.append(text + ".")
        if after is not None and len(after):
            a = after[(after["kind"] == "bucket") & (after["bucket"] == "inaccessible")]
            if len(a):
                lines.append(f"After their own run, {100 * a['greedy_share'].iloc[0]:.1f}% of those training facts "
                             f"were greedy-correct and {100 * a['accessible_share'].iloc[0]:.1f}% accessible: "
                             "what changes during training is how inaccessible facts get a signal at all.")
    if len(loo):
        lt = loo.sort_values("drop", ascending=False).iloc[0]
        lines.append(f"Leaving out **{lt['bucket']}** costs the mixed run most: {_fmt(lt['drop'])} points "
                     f"[{_fmt(lt['ci_lo'])}, {_fmt(lt['ci_hi'])}] of its {_fmt(lt['mixed_gain'])}.")
    return " ".join(lines)


def _md_table(df: pd.DataFrame, floatfmt: str = "{:.3f}") -> str:
    cols = list(df.columns)
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in df.iterrows():
        cells = [floatfmt.format(v) if isinstance(v, float) and math.isfinite(v) else
                 ("n/a" if isinstance(v, float) else str(v)) for v in row]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def report_markdown(summary: dict[str, Any], sizes: pd.DataFrame, gains: pd.DataFrame, loo: pd.DataFrame,
                    zero: pd.DataFrame, tracin: pd.DataFrame | None, corr: dict[str, Any] | None,
                    trans_sum: pd.DataFrame | None = None, after: pd.DataFrame | None = None) -> str:
    """report.md of an attribution run."""
    s = summary
    parts = [
        "# Data attribution: which training facts drive the held-out GRPO gain", "",
        f"Base `{s['base']}`; {s['n_train']} training facts bucketed by {s['n_samples']} base samples; "
        f"{s['n_test']} held-out facts; seeds {s['seeds']}; {s['per_bucket']} facts per bucket per run; "
        f"GRPO {s['grpo']['steps']} steps x {s['grpo']['batch_size']} questions x {s['grpo']['num_generations']} "
        f"samples, lr {s['grpo']['lr']}; `{s['grpo']['match_mode']}` matching"
        f"{', chat template' if (s.get('prompt') or {}).get('chat') else ''}. Held-out states use the `logprob` criterion (eps = {s['eps']:.4f}). "
        f"Wall time {s['seconds']:.0f} s.", "",
        "## Answer", "", s["answer"], "",
        "## Bucket sizes (training facts)", "", _md_table(sizes), "",
    ]
    if s["skipped_buckets"]:
        parts += [f"Skipped (fewer than {s['min_bucket']} facts): {s['skipped_buckets']}.", ""]
    parts += ["## Held-out gain by training data (greedy accuracy, mean over seeds, 95% t-interval over seeds)", "",
              _md_table(gains), "", f"Base held-out greedy accuracy: {s['base_accuracy']:.3f}.", "",
              "## Leave one bucket out (drop of the mixed run's gain)", "",
              _md_table(loo) if len(loo) else "not run", "",
              "## Held-out transitions (mean count over seeds, `logprob` states)", "",
              _md_table(trans_sum, "{:.1f}") if trans_sum is not None else "n/a", "",
              "## Zero-signal groups (all G completions rewarded alike: zero advantage, zero gradient)", "",
              "Share per training bucket, first and second half of each run's steps; `all_wrong` groups are "
              "the ones that cannot teach, `all_right` ones have nothing left to learn.", "",
              _md_table(zero) if len(zero) else "not logged", "",
              "## Training facts after training (their own run's model, rescored)", "",
              f"Greedy-correct and accessible (at least one correct of {s.get('after_samples')} samples) shares of "
              "each run's training facts, pooled over seeds.", "",
              _md_table(after) if after is not None and len(after) else "not measured", ""]
    if tracin is not None and corr is not None:
        parts += ["## TracIn-style per-example scores", "",
                  "Sum over each seed's bucket sample of <grad of the fact's GRPO objective on its sampled group, "
                  "grad of held-out sum log p(gold)>, mean over seeds, per checkpoint.", "",
                  _md_table(tracin, "{:.4g}"), "",
                  "Spearman rank correlation of the per-bucket sums with the measured gains "
                  f"(n = {corr['n_buckets']} buckets, so one swap moves it a lot):", "",
                  "\n".join(f"- `{k}`: {_fmt(v, False)}" for k, v in corr.items() if k != "n_buckets"), "",
                  f"Exact vs projected (count sketch, dim {s.get('tracin_dim')}) scores, Pearson over facts: "
                  f"{_fmt(s.get('tracin_projection_pearson'), False)}.", ""]
    parts += ["Files: `buckets.csv`, `bucket_sizes.csv`, `runs.csv`, `gains.csv`, `loo.csv`, `zero_signal.csv`, "
              "`train_after.csv`, `transitions.csv` (every run's matrix with bootstrap CIs), `transition_summary.csv`, "
              "`tracin.parquet`, `tracin_buckets.csv`, `figures/attribution.png`, `summary.json`; one GRPO run "
              "directory per run under `runs/`.", ""]
    return "\n".join(parts)
