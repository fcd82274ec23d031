"""Data attribution: which training facts drive the held-out GRPO gain (arXiv 2605.07153's third finding).

1. **Buckets.** Every training fact is sorted by how often the base model's n
   samples (default 128, the paper's n) answer it correctly: *inaccessible* (0/n),
   *rare* (above 0, at most ``rare_max`` = 10%), *medium* (at most
   ``medium_max`` = 50%), *frequent* (above 50% but the greedy answer is wrong) and
   *greedy-correct* (the greedy answer is right, whatever the samples say). The
   counts come from the cached score table (``score_table.score_facts``).
2. **Bucket runs** (``attribution_runs.run_attribution``): GRPO on an equal-size
   sample of each bucket, same step budget and seed; a run on all those samples
   mixed; a leave-one-bucket-out run per bucket; every run for several seeds. Each
   run's held-out gain and transition matrix come from ``stats`` and
   ``transitions`` against the base model's score table on the test facts.
3. **Per-example scores** (``attribution_tracin``): a TracIn-style inner product
   of each fact's GRPO group gradient with the held-out log p(gold) gradient.

This module holds the torch-free parts: bucket rules, the run plan, the tables
made from finished runs, the figure and the report.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from massshift.seeds import derive_seed32

BUCKETS: tuple[str, ...] = ("inaccessible", "rare", "medium", "frequent", "greedy-correct")
BUCKET_COLORS: dict[str, str] = dict(zip(BUCKETS, ("#999999", "#E69F00", "#56B4E9", "#009E73", "#0072B2")))


@dataclass(frozen=True)
class BucketBounds:
    """Upper bounds (share of correct samples) of the rare and medium buckets.

    Attributes:
        rare_max: a fact with 0 < share <= rare_max is rare (paper: 10%).
        medium_max: rare_max < share <= medium_max is medium (paper: 50%); above is frequent.
    """

    rare_max: float = 0.10
    medium_max: float = 0.50

    def __post_init__(self) -> None:
        if not 0.0 < self.rare_max < self.medium_max < 1.0:
            raise ValueError(f"BucketBounds needs 0 < rare_max < medium_max < 1 (e.g. 0.1 and 0.5), "
                             f"got rare_max={self.rare_max}, medium_max={self.medium_max}")


def assign_buckets(scores: pd.DataFrame, bounds: BucketBounds | None = None) -> pd.Series:
    """The accessibility bucket of every row of a score table (``n_correct, n_samples, greedy_correct``).

    Greedy-correct wins over every share; otherwise 0 correct samples is inaccessible, a share
    in (0, rare_max] rare, (rare_max, medium_max] medium, above medium_max frequent.
    """
    bounds = bounds or BucketBounds()
    missing = [c for c in ("n_correct", "n_samples", "greedy_correct") if c not in scores.columns]
    if missing:
        raise ValueError(f"assign_buckets needs column(s) {missing} (a score table from score_table.score_facts)")
    n = scores["n_samples"].to_numpy(dtype=float)
    if len(n) and (n < 1).any():
        raise ValueError("assign_buckets needs samples: some rows have n_samples < 1; score with n_samples >= 1 "
                         "(the paper uses 128)")
    c = scores["n_correct"].to_numpy(dtype=float)
    if ((c < 0) | (c > n)).any():
        raise ValueError("n_correct must lie in [0, n_samples]")
    share = c / n
    out = np.select([scores["greedy_correct"].to_numpy(dtype=bool), c == 0, share <= bounds.rare_max,
                     share <= bounds.medium_max], list(BUCKETS[4:] + BUCKETS[:3]), default="frequent")
    return pd.Series(out, index=scores.index, name="bucket")


def bucket_sizes(buckets: pd.Series) -> pd.DataFrame:
    """``bucket, n, share`` for every bucket in ``BUCKETS`` order (empty buckets included)."""
    counts = buckets.value_counts()
    total = int(counts.sum())
    return pd.DataFrame([{"bucket": b, "n": int(counts.get(b, 0)),
                          "share": int(counts.get(b, 0)) / total if total else math.nan} for b in BUCKETS])


@dataclass(frozen=True)
class RunSpec:
    """One GRPO run of the attribution study: ``kind`` is bucket, mixed or loo (leave ``bucket`` out)."""

    name: str
    kind: str
    bucket: str | None
    seed: int
    fact_ids: tuple[str, ...] = field(repr=False)


def plan_runs(buckets: pd.DataFrame, sample_size: int, seeds: tuple[int, ...], min_bucket: int = 16,
              leave_one_out: bool = True) -> tuple[list[RunSpec], dict[str, Any]]:
    """The runs for ``buckets`` (``fact_id, bucket``): per seed, each usable bucket, mixed, and leave-one-out.

    Buckets with fewer than ``min_bucket`` facts are skipped (named in the plan). Each run of a
    seed trains on an equal-size sample of ``k = min(sample_size, smallest usable bucket)`` facts
    per bucket, drawn per (seed, bucket); mixed is the union of a seed's samples, and leave-one-out
    that union without one bucket's sample.
    """
    if sample_size < 1 or min_bucket < 1:
        raise ValueError(f"sample_size and min_bucket must be >= 1, got {sample_size} and {min_bucket}")
    if not seeds:
        raise ValueError("give at least one seed")
    sizes = buckets["bucket"].value_counts()
    used = [b for b in BUCKETS if sizes.get(b, 0) >= max(min_bucket, 1)]
    skipped = {b: int(sizes.get(b, 0)) for b in BUCKETS if b not in used}
    if not used:
        raise ValueError(f"no bucket has {min_bucket} or more facts (sizes {dict(sizes)}); lower min_bucket")
    k = min(sample_size, *(int(sizes[b]) for b in used))
    specs: list[RunSpec] = []
    for seed in seeds:
        sample: dict[str, list[str]] = {}
        for b in used:
            ids = sorted(buckets.loc[buckets["bucket"] == b, "fact_id"].astype(str))
            rng = np.random.default_rng(derive_seed32(seed, "bucket-sample", b))
            sample[b] = [ids[i] for i in sorted(rng.choice(len(ids), size=k, replace=False))]
        for b in used:
            specs.append(RunSpec(f"bucket-{b}-s{seed}", "bucket", b, seed, tuple(sample[b])))
        if len(used) > 1:
            specs.append(RunSpec(f"mixed-s{seed}", "mixed", None, seed, tuple(i for b in used for i in sample[b])))
            if leave_one_out:
                for b in used:
                    specs.append(RunSpec(f"loo-{b}-s{seed}", "loo", b, seed,
                                         tuple(i for o in used if o != b for i in sample[o])))
    return specs, {"used_buckets": used, "skipped_buckets": skipped, "per_bucket": k}


# ----------------------------------------------------------------------------- tables from finished runs

def seed_interval(values: np.ndarray | list[float], ci: float = 0.95) -> tuple[float, float, float]:
    """Mean and Student-t interval over seeds (NaN bounds with fewer than two seeds)."""
    from scipy.stats import t

    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return math.nan, math.nan, math.nan
    m = float(x.mean())
    if len(x) < 2:
        return m, math.nan, math.nan
    half = float(t.ppf(0.5 + ci / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return m, m - half, m + half


def gain_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Held-out gain per (kind, bucket) over seeds: ``kind, bucket, n_seeds, gain, ci_lo, ci_hi, sd``."""
    rows = []
    for (kind, bucket), grp in runs.groupby(["kind", runs["bucket"].fillna("all")], sort=False):
        m, lo, hi = seed_interval(grp["gain"])
        rows.append({"kind": kind, "bucket": bucket, "n_seeds": len(grp), "gain": m, "ci_lo": lo, "ci_hi": hi,
                     "sd": float(grp["gain"].std(ddof=1)) if len(grp) > 1 else math.nan})
    return pd.DataFrame(rows)


def loo_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Share of the mixed run's gain attributable to each bucket: the drop when it is left out.

    Per seed, ``drop = gain(mixed) - gain(mixed without the bucket)``; over seeds the mean drop with
    a t-interval, and ``share = mean drop / mean mixed gain`` (shares need not sum to 1: buckets interact).
    """
    mixed = runs[runs["kind"] == "mixed"].set_index("seed")["gain"]
    rows = []
    for bucket, grp in runs[runs["kind"] == "loo"].groupby("bucket", sort=False):
        drops = [float(mixed[s] - g) for s, g in zip(grp["seed"], grp["gain"]) if s in mixed.index]
        m, lo, hi = seed_interval(drops)
        full = float(mixed.mean()) if len(mixed) else math.nan
        rows.append({"bucket": bucket, "n_seeds": len(drops), "drop": m, "ci_lo": lo, "ci_hi": hi,
                     "mixed_gain": full, "share": m / full if full else math.nan})
    return pd.DataFrame(rows)


def zero_signal_table(results: list[dict[str, Any]]) -> pd.DataFrame:
    """Share of GRPO groups with zero reward variance, per training bucket and phase, from every run's counts."""
    rows = [dict(r, kind=res["kind"]) for res in results for r in res.get("zero_signal", [])]
    if not rows:
        return pd.DataFrame(columns=["kind", "bucket", "phase", "groups", "zero", "share"])
    cols = [c for c in ("groups", "zero", "zero_wrong", "zero_right") if c in rows[0]]
    df = pd.DataFrame(rows).groupby(["kind", "bucket", "phase"], sort=False)[cols].sum(min_count=1).reset_index()
    groups = df["groups"].where(df["groups"] > 0)
    df["share"] = df["zero"] / groups
    if "zero_right" in df:
        df["share_all_wrong"] = df["zero_wrong"] / groups
        df["share_all_right"] = df["zero_right"] / groups
    return df


def after_table(results: list[dict[str, Any]]) -> pd.DataFrame:
    """Training facts after training, per (run kind, training bucket): greedy-correct and accessible shares.

    From each bucket / mixed run's ``after_train`` counts (its own training facts rescored with the
    trained model); shares are pooled over seeds. ``accessible`` is at least one correct sample.
    """
    rows = [dict(r, kind=res["kind"]) for res in results for r in res.get("after_train", [])]
    if not rows:
        return pd.DataFrame(columns=["kind", "bucket", "n", "greedy_correct", "accessible"])
    df = pd.DataFrame(rows).groupby(["kind", "bucket"], sort=False)[["n", "greedy_correct", "accessible"]].sum()
    df = df.reset_index()
    df["greedy_share"] = df["greedy_correct"] / df["n"]
    df["accessible_share"] = df["accessible"] / df["n"]
    return df


def transition_summary(trans: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Held-out facts gained from tail / absent and lost, per (kind, bucket), mean count over seeds."""
    from massshift.score.schema import STATES

    greedy, tail, absent = STATES
    rows = []
    for name, t in trans.groupby("run", sort=False):
        c = t.set_index(["base_state", "rl_state"])["count"]
        rows.append({"run": name, "tail_to_greedy": int(c[(tail, greedy)]), "absent_to_greedy": int(c[(absent, greedy)]),
                     "greedy_lost": int(c[(greedy, tail)] + c[(greedy, absent)])})
    df = pd.DataFrame(rows).merge(runs[["name", "kind", "bucket"]], left_on="run", right_on="name")
    df["bucket"] = df["bucket"].fillna("all")
    out = df.groupby(["kind", "bucket"], sort=False)[["tail_to_greedy", "absent_to_greedy", "greedy_lost"]].mean()
    out = out.reset_index()
    new = out["tail_to_greedy"] + out["absent_to_greedy"]
    out["share_from_tail"] = out["tail_to_greedy"] / new.where(new > 0)
    return out


def tracin_buckets(scores: pd.DataFrame, specs: list[RunSpec], gains: pd.DataFrame,
                   loo: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Per bucket: summed TracIn scores over each seed's bucket sample (mean over seeds) next to measured gains.

    ``scores`` has ``fact_id, bucket`` and one column per checkpoint (``score_<name>``) plus ``score_total``.
    Returns the table and the Spearman correlations (score sums vs bucket-run gains and vs LOO drops).
    """
    from scipy.stats import spearmanr

    cols = [c for c in scores.columns if c.startswith("score_") and c != "score_proj"]
    by_id = scores.set_index("fact_id")
    rows = []
    for spec in [s for s in specs if s.kind == "bucket"]:
        part = by_id.loc[list(spec.fact_ids)]
        rows.append({"bucket": spec.bucket, "seed": spec.seed, **{c: float(part[c].sum()) for c in cols},
                     "zero_signal_share": float(part["zero_signal"].mean())})
    per_seed = pd.DataFrame(rows)
    table = per_seed.groupby("bucket", sort=False)[cols + ["zero_signal_share"]].mean().reset_index()
    g = gains[gains["kind"] == "bucket"].set_index("bucket")["gain"]
    table["bucket_gain"] = table["bucket"].map(g)
    table["loo_drop"] = table["bucket"].map(loo.set_index("bucket")["drop"]) if len(loo) else math.nan
    corr: dict[str, Any] = {"n_buckets": len(table)}
    for c in cols:
        for target in ("bucket_gain", "loo_drop"):
            ok = table[[c, target]].dropna()
            rho = float(spearmanr(ok[c], ok[target]).statistic) if len(ok) >= 3 and ok[c].nunique() > 1 \
                and ok[target].nunique() > 1 else math.nan
            corr[f"{c}~{target}"] = rho
    return table, corr


# ----------------------------------------------------------------------------- figure and report

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


def dump(obj: Any) -> str:
    """Compact JSON for keys of finished runs."""
    return json.dumps(obj, sort_keys=True, default=str)
