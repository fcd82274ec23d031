"""State shares by exposure (popularity or pretraining mentions), with the never-seen control row: facts
whose subject was never seen can only be guessed, so any tail-correct label there is a false positive."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from massshift.analysis.states import TAIL
from massshift.score.schema import STATES

EXPOSURE_BUCKETS: tuple[tuple[str, float, float], ...] = (
    ("0", 0, 0), ("1", 1, 1), ("2-3", 2, 3), ("4-7", 4, 7), ("8+", 8, math.inf),
)
"""Exposure-count buckets (label, lowest, highest) for integer popularity (the synthetic world's exposure)."""


def exposure_buckets(popularity: Sequence[float] | np.ndarray, n_quantiles: int = 4) -> tuple[np.ndarray, list[str], str]:
    """Bucket label of every fact (None where popularity is missing), the labels in order, and the kind.

    Integer popularity (every finite value a whole number >= 0, as exposure counts
    are) uses ``EXPOSURE_BUCKETS`` (kind ``exposure``); anything else uses
    ``n_quantiles`` quantile buckets labelled by their value ranges (kind ``quantile``;
    ties may merge buckets).
    """
    pop = np.asarray(popularity, dtype=float)
    ok = np.isfinite(pop)
    labels = np.full(len(pop), None, dtype=object)
    if not ok.any():
        return labels, [], "exposure"
    vals = pop[ok]
    if (vals >= 0).all() and (vals == np.round(vals)).all():
        order = []
        for label, lo, hi in EXPOSURE_BUCKETS:
            labels[ok & (pop >= lo) & (pop <= hi)] = label
            order.append(label)
        return labels, order, "exposure"
    cats = pd.qcut(vals, n_quantiles, duplicates="drop")
    names = [f"[{iv.left:.3g}, {iv.right:.3g}]" for iv in cats.categories]
    labels[ok] = np.asarray(names, dtype=object)[cats.codes]
    return labels, names, "quantile"


def exposure(merged: pd.DataFrame, states: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, Any] | None:
    """State shares by popularity bucket, per model and criterion, and the never-seen control.

    ``states`` maps a criterion to (base states, RL states). Returns None without a
    ``popularity`` column (or with no finite value). ``rows``: one per (bucket,
    model, criterion) with ``n`` and the share of each state; ``never_seen``: the
    facts with popularity exactly 0 (never seen in pretraining, in the synthetic
    world), with the share each criterion labels tail-correct (and greedy-correct)
    per model; None when there are none. Facts without popularity are counted in
    ``n_missing`` and left out.
    """
    if "popularity" not in merged.columns:
        return None
    pop = merged["popularity"].to_numpy(dtype=float)
    labels, order, kind = exposure_buckets(pop)
    if not order:
        return None
    rows = []
    for bucket in order:
        in_bucket = labels == bucket
        for m_i, model in enumerate(("base", "rl")):
            for crit, pair in states.items():
                st = pair[m_i][in_bucket]
                n = int(in_bucket.sum())
                rows.append({"bucket": bucket, "model": model, "criterion": crit, "n": n,
                             **{s: (float((st == s).mean()) if n else None) for s in STATES}})
    zero = np.isfinite(pop) & (pop == 0)
    never = None
    if zero.any():
        never = {
            "n": int(zero.sum()),
            "tail_share": {c: {m: float((pair[i][zero] == TAIL).mean()) for i, m in enumerate(("base", "rl"))}
                           for c, pair in states.items()},
            "greedy_share": {m: float(merged[f"greedy_correct_{m}"].to_numpy(dtype=bool)[zero].mean())
                             for m in ("base", "rl")},
        }
    return {"kind": kind, "buckets": order, "n_missing": int((~np.isfinite(pop)).sum()), "rows": rows,
            "never_seen": never}


