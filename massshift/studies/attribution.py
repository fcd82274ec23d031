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

from massshift.configio import help_field
from massshift.seeds import derive_seed32

BUCKETS: tuple[str, ...] = ("inaccessible", "rare", "medium", "frequent", "greedy-correct")
BUCKET_COLORS: dict[str, str] = dict(zip(BUCKETS, ("#999999", "#E69F00", "#56B4E9", "#009E73", "#0072B2")))


@dataclass(frozen=True)
class BucketBounds:
    """Upper bounds (share of correct samples) of the rare and medium buckets."""

    rare_max: float = help_field(0.10, help="A fact with 0 < share of correct samples <= rare_max is rare "
                                            "(paper: 10%).")
    medium_max: float = help_field(0.50, help="rare_max < share <= medium_max is medium (paper: 50%); above "
                                              "is frequent.")

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

def dump(obj: Any) -> str:
    """Compact JSON for keys of finished runs."""
    return json.dumps(obj, sort_keys=True, default=str)
