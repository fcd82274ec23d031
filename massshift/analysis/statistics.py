"""Statistics of a base -> RL comparison, read from the merged fact table (facts.parquet).

Every function takes the merged table written by ``transitions.merge_models``
(columns suffixed ``_base`` and ``_rl``) and returns plain numbers, dicts or a
tidy DataFrame, keyed by the names used in ``summary.json``. :func:`summarise`
assembles them all.

Confidence intervals come from one paired bootstrap over facts
(``massshift.analysis.estimators``; ``StatsConfig`` is re-exported here). An estimate is
``{"value": v, "ci": [lo, hi]}``; undefined numbers are ``None`` in JSON.

The estimators themselves (pass@k, the support counts) live in ``estimators``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import binomtest

from massshift.analysis.estimators import (
    Bootstrap,
    StatsConfig,
    as_number,
    count_stat,
    crossing_k,
    masked_stat,
    mean_stat,
    pass_at_k_curve,
    ratio_stat,
    support_counts,
)
from massshift.analysis.exposure import exposure
from massshift.analysis.states import (
    ABSENT,
    CRITERIA,
    SLICK_CLASSES,
    TAIL,
    StateConfig,
    add_state_columns,
    agreement,
    agreement_pairs,
    has_distractors,
    has_samples,
    is_tail_logprob,
    slick_class,
)
from massshift.analysis.transitions import model_view, row_normalise, state_codes, transition_matrix
from massshift.score.schema import STATES, ScoreTableError

logger = logging.getLogger(__name__)

def model_states(merged: pd.DataFrame, state_config: StateConfig) -> tuple[np.ndarray, np.ndarray]:
    """States of every fact under the base and the RL model, by ``state_config``."""
    base = add_state_columns(model_view(merged, "_base"), state_config)["state"].to_numpy()
    rl = add_state_columns(model_view(merged, "_rl"), state_config)["state"].to_numpy()
    return base, rl


def _greedy(merged: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    return (merged["greedy_correct_base"].to_numpy(dtype=bool), merged["greedy_correct_rl"].to_numpy(dtype=bool))


def accuracy_and_gain(merged: pd.DataFrame, boot: Bootstrap) -> dict[str, Any]:
    """Greedy accuracy of both models and the absolute and relative gain, with paired CIs."""
    gb, gr = (x.astype(float) for x in _greedy(merged))
    return {
        "accuracy": {"base": boot.estimate(mean_stat(gb)), "rl": boot.estimate(mean_stat(gr))},
        "gain": {
            "absolute": boot.estimate(lambda idx: gr[idx].mean(axis=1) - gb[idx].mean(axis=1)),
            "relative": boot.estimate(lambda idx: gr[idx].mean(axis=1) / gb[idx].mean(axis=1) - 1.0),
        },
    }


def mcnemar(merged: pd.DataFrame) -> dict[str, Any]:
    """McNemar's exact test on greedy correctness.

    ``b``: base correct, RL wrong; ``c``: base wrong, RL correct; the p-value is the
    two-sided binomial test of ``c`` out of ``b + c`` at 1/2 (1.0 when ``b + c == 0``).
    """
    gb, gr = _greedy(merged)
    b, c = int((gb & ~gr).sum()), int((~gb & gr).sum())
    p = float(binomtest(c, b + c, 0.5).pvalue) if b + c else 1.0
    return {"b": b, "c": c, "n_discordant": b + c, "p_value": p}


# ----------------------------------------------------------------------------- where new facts came from

def redistribution(merged: pd.DataFrame, base_states: np.ndarray, boot: Bootstrap) -> dict[str, Any]:
    """Of the facts that became greedy-correct, how many were tail-correct and how many absent in the base."""
    gb, gr = _greedy(merged)
    new = ~gb & gr
    tail, absent = new & (base_states == TAIL), new & (base_states == ABSENT)
    return {
        "n_new_greedy": int(new.sum()),
        "from_tail": int(tail.sum()),
        "from_absent": int(absent.sum()),
        "share_tail": boot.estimate(ratio_stat(tail, new)),
        "share_absent": boot.estimate(ratio_stat(absent, new)),
    }


def churn(merged: pd.DataFrame, base_states: np.ndarray, rl_states: np.ndarray, boot: Bootstrap) -> dict[str, Any]:
    """Facts gained and lost in greedy correctness, the net, and the states they came from / went to."""
    gb, gr = _greedy(merged)
    gained, lost = ~gb & gr, gb & ~gr
    return {
        "gained": boot.estimate(count_stat(gained)),
        "lost": boot.estimate(count_stat(lost)),
        "net": boot.estimate(lambda idx: gained[idx].sum(axis=1) - lost[idx].sum(axis=1).astype(float)),
        "gained_from": {s: int((gained & (base_states == s)).sum()) for s in (TAIL, ABSENT)},
        "lost_to": {s: int((lost & (rl_states == s)).sum()) for s in (TAIL, ABSENT)},
    }


def nonfinite_logp(merged: pd.DataFrame) -> dict[str, int]:
    """Facts whose ``logp_gold`` is NaN or infinite, per model (kept in every count)."""
    return {m: int((~np.isfinite(merged[f"logp_gold_{m}"].to_numpy(dtype=float))).sum()) for m in ("base", "rl")}


def logp_shift(merged: pd.DataFrame, base_states: np.ndarray, boot: Bootstrap) -> dict[str, Any]:
    """Median of ``logp_gold_rl - logp_gold_base`` per base state (and over all facts), with CIs.

    Only facts with both log-probs finite enter the median; ``n_nonfinite`` counts the others.
    """
    lb = merged["logp_gold_base"].to_numpy(dtype=float)
    lr = merged["logp_gold_rl"].to_numpy(dtype=float)
    finite = np.isfinite(lb) & np.isfinite(lr)
    with np.errstate(invalid="ignore"):
        shift = np.where(finite, lr - lb, np.nan)
    out = {}
    for state in (*STATES, "all"):
        in_state = np.ones(len(lb), bool) if state == "all" else base_states == state
        mask = in_state & finite
        est = boot.estimate(masked_stat(shift, mask, np.nanmedian)) if mask.any() else {"value": None, "ci": [None, None]}
        out[state] = {"median": est, "n": int(mask.sum()), "n_nonfinite": int((in_state & ~finite).sum())}
    return out


def entropy(merged: pd.DataFrame, boot: Bootstrap) -> dict[str, Any] | None:
    """Mean answer entropy (nats) of each model and the mean paired change; None without samples."""
    hb = merged["answer_entropy_base"].to_numpy(dtype=float)
    hr = merged["answer_entropy_rl"].to_numpy(dtype=float)
    fb, fr = np.isfinite(hb), np.isfinite(hr)
    if not (fb.any() and fr.any()):
        return None
    both = fb & fr
    with np.errstate(invalid="ignore"):
        change = np.where(both, hr - hb, np.nan)
    return {
        "base": boot.estimate(masked_stat(hb, fb, np.nanmean)),
        "rl": boot.estimate(masked_stat(hr, fr, np.nanmean)),
        "change": boot.estimate(masked_stat(change, both, np.nanmean)),
        "n": {"base": int(fb.sum()), "rl": int(fr.sum()), "both": int(both.sum())},
    }


# ----------------------------------------------------------------------------- support (Wu et al. 2025)

def support(merged: pd.DataFrame, eps: float) -> dict[str, Any]:
    """Support counts by log-prob (p(gold) > eps, strict as in Wu et al.) and, with samples, by sampling."""
    lb, lr = (merged[f"logp_gold_{m}"].to_numpy(dtype=float) for m in ("base", "rl"))
    with np.errstate(invalid="ignore"):
        by_logp = support_counts(np.isfinite(lb) & (lb > math.log(eps)), np.isfinite(lr) & (lr > math.log(eps)))
    sampled = has_samples(model_view(merged, "_base")) and has_samples(model_view(merged, "_rl"))
    by_sampling = (
        support_counts(merged["n_correct_base"].to_numpy() >= 1, merged["n_correct_rl"].to_numpy() >= 1)
        if sampled else None
    )
    return {"logprob": {"eps": eps, **by_logp}, "sampling": by_sampling}


def chance_summary(merged: pd.DataFrame) -> dict[str, Any]:
    """Per model: mean K_q, median gold rank, mean distractors per fact, facts without distractors."""
    out = {}
    for m in ("base", "rl"):
        kq = merged[f"k_q_{m}"].to_numpy(dtype=float)
        rank = merged[f"gold_rank_{m}"].to_numpy(dtype=float)
        n_d = merged[f"n_distractors_{m}"].to_numpy(dtype=float)
        out[m] = {
            "k_q_mean": float(np.nanmean(kq)) if np.isfinite(kq).any() else None,
            "gold_rank_median": float(np.nanmedian(rank)) if np.isfinite(rank).any() else None,
            "share_gold_first": float((rank == 1).mean()),
            "n_distractors_mean": float(n_d.mean()),
            "n_without_distractors": int((n_d == 0).sum()),
        }
    return out


# ----------------------------------------------------------------------------- tables

def sensitivity(merged: pd.DataFrame, eps_grid: Sequence[float] | None = None) -> pd.DataFrame:
    """Redistribution share (logprob criterion) for each eps of a grid (default 13 values, 1e-4..1e-1).

    Columns: ``eps, n_tail_base, n_new_greedy, from_tail, from_absent, share_tail``.
    """
    grid = np.logspace(-4, -1, 13) if eps_grid is None else np.asarray(eps_grid, dtype=float)
    gb, gr = _greedy(merged)
    new = ~gb & gr
    logp = merged["logp_gold_base"].to_numpy(dtype=float)
    rows = []
    for eps in grid:
        tail = ~gb & is_tail_logprob(logp, float(eps))
        from_tail = int((new & tail).sum())
        rows.append({
            "eps": float(eps), "n_tail_base": int(tail.sum()), "n_new_greedy": int(new.sum()),
            "from_tail": from_tail, "from_absent": int(new.sum()) - from_tail,
            "share_tail": from_tail / new.sum() if new.any() else float("nan"),
        })
    return pd.DataFrame(rows)


def transition_table(
    base_states: np.ndarray, rl_states: np.ndarray, boot: Bootstrap, criterion: str = "logprob"
) -> pd.DataFrame:
    """Tidy transitions: ``criterion, base_state, rl_state, count, row_share, row_share_lo, row_share_hi``.

    ``row_share`` is P(RL state | base state); its interval comes from the paired bootstrap.
    """
    k = len(STATES)
    counts = transition_matrix(base_states, rl_states)
    shares = row_normalise(counts)
    pair = state_codes(base_states) * k + state_codes(rl_states)

    def stat(idx: np.ndarray) -> np.ndarray:
        offsets = (pair[idx] + k * k * np.arange(len(idx))[:, None]).ravel()
        c = np.bincount(offsets, minlength=k * k * len(idx)).reshape(len(idx), k, k).astype(float)
        return (c / c.sum(axis=2, keepdims=True)).reshape(len(idx), k * k)

    lo, hi = boot.interval(boot.replicates(stat))
    rows = []
    for i, b in enumerate(STATES):
        for j, r in enumerate(STATES):
            rows.append({
                "criterion": criterion, "base_state": b, "rl_state": r, "count": int(counts.iloc[i, j]),
                "row_share": shares.iloc[i, j], "row_share_lo": lo[i * k + j], "row_share_hi": hi[i * k + j],
            })
    return pd.DataFrame(rows)


def _nested_counts(base_states: np.ndarray, rl_states: np.ndarray) -> dict[str, dict[str, int]]:
    counts = transition_matrix(base_states, rl_states)
    return {b: {r: int(counts.loc[b, r]) for r in STATES} for b in STATES}


# ----------------------------------------------------------------------------- everything

def summarise(
    merged: pd.DataFrame, state_config: StateConfig | None = None, stats_config: StatsConfig | None = None
) -> dict[str, Any]:
    """Every statistic of a comparison as one JSON-able dict (the content of summary.json).

    States are recomputed from the raw columns with ``state_config``; sampling-based
    numbers (agreement, pass@k, sampling variants, SliCK, entropy) are ``None`` unless
    both models have samples on every fact. Deterministic for a given ``stats_config.seed``.
    """
    state_config, stats_config = state_config or StateConfig(), stats_config or StatsConfig()
    if len(merged) == 0:
        raise ScoreTableError("cannot summarise an empty comparison: the merged table has no facts")
    boot = Bootstrap(len(merged), stats_config)
    views = {m: model_view(merged, f"_{m}") for m in ("base", "rl")}
    state_config = state_config.resolve(*views.values())
    sampled = all(has_samples(v) for v in views.values())
    chance = all(has_distractors(v) for v in views.values())
    criteria = ["logprob"] + (["sampling"] if sampled else []) + (["chance"] if chance else [])
    if state_config.criterion not in criteria:
        criteria.append(state_config.criterion)  # raises below, naming what is missing
    states = {crit: model_states(merged, state_config.with_criterion(crit)) for crit in criteria}
    base_states, rl_states = states[state_config.criterion]
    summary: dict[str, Any] = {
        "n_facts": len(merged),
        "criterion": state_config.criterion,
        "eps": state_config.threshold,
        "state_config": {"n": state_config.n, "alpha": state_config.alpha, "eps": state_config.eps,
                         "chance_ratio": state_config.chance_ratio, "chance_top": state_config.chance_top,
                         "chance_specificity": state_config.chance_specificity},
        "bootstrap": {"n_boot": stats_config.n_boot, "ci": stats_config.ci, "seed": stats_config.seed},
        "has_samples": sampled,
        "n_nonfinite_logp": nonfinite_logp(merged),
        **accuracy_and_gain(merged, boot),
        "mcnemar": mcnemar(merged),
        "transitions": _nested_counts(base_states, rl_states),
        "transitions_by_criterion": {c: (_nested_counts(*states[c]) if c in states else None) for c in CRITERIA},
        "redistribution": {"criterion": state_config.criterion, **redistribution(merged, base_states, boot)},
        "redistribution_by_criterion": {
            c: (redistribution(merged, states[c][0], boot) if c in states else None) for c in CRITERIA
        },
        "churn": churn(merged, base_states, rl_states, boot),
        "logp_shift": logp_shift(merged, base_states, boot),
        "entropy": entropy(merged, boot),
        "support": support(merged, state_config.threshold),
        "agreement": None,
        "agreement_pairwise": None,
        "chance": chance_summary(merged) if chance else None,
        "exposure": exposure(merged, states),
        "slick": None,
        "pass_at_k": None,
        "sensitivity": sensitivity(merged).to_dict(orient="records"),
    }
    if len(states) > 1:  # criteria both models have, in CRITERIA order
        summary["agreement_pairwise"] = {m: agreement_pairs({c: s[i] for c, s in states.items()})
                                         for i, m in enumerate(("base", "rl"))}
    if sampled:
        with_states = {m: add_state_columns(v, state_config) for m, v in views.items()}
        summary["agreement"] = {m: agreement(v) for m, v in with_states.items()}
        summary["slick"] = {
            m: {c: int((slick_class(v) == c).sum()) for c in SLICK_CLASSES}
            for m, v in views.items()
        }
        curves = {m: pass_at_k_curve(v) for m, v in views.items()}
        summary["pass_at_k"] = {
            **{m: curve.to_dict(orient="records") for m, curve in curves.items()},
            "crossing_k": crossing_k(curves["base"], curves["rl"]),
        }
    logger.info(
        "summarised %d facts: accuracy %.3f -> %.3f, %d newly greedy-correct (%d from tail)",
        len(merged), summary["accuracy"]["base"]["value"], summary["accuracy"]["rl"]["value"],
        summary["redistribution"]["n_new_greedy"], summary["redistribution"]["from_tail"],
    )
    return _clean(summary)


def _clean(obj: Any) -> Any:
    """Plain Python types only, NaN and infinities as None (valid, byte-stable JSON)."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return as_number(obj)
    return obj
