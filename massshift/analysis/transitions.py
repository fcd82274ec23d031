"""How facts move between states: the merged fact table, the 3 x 3 transition matrix, trajectories.

Rows of every matrix are the base model's state and columns the RL model's,
both in ``schema.STATES`` order (greedy-correct, tail-correct, absent); all nine
cells are always present.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from massshift.score.schema import FACT_COLUMNS_OPTIONAL, STATES, ScoreTableError

logger = logging.getLogger(__name__)

FACT_LEVEL_COLUMNS: tuple[str, ...] = ("question", "answers", *FACT_COLUMNS_OPTIONAL)
"""Columns that describe the fact, not the model: kept once, unsuffixed, in a merged table."""

SUFFIXES: tuple[str, str] = ("_base", "_rl")


def state_codes(states: pd.Series | Sequence[str] | np.ndarray) -> np.ndarray:
    """Integer codes 0, 1, 2 of states in ``schema.STATES`` order; raises on an unknown state."""
    values = np.asarray(states, dtype=object)
    codes = np.full(len(values), -1, dtype=np.int64)
    for i, state in enumerate(STATES):
        codes[values == state] = i
    if (codes < 0).any():
        bad = sorted({str(v) for v in values[codes < 0]})[:5]
        raise ValueError(f"unknown state(s) {bad}; states are {STATES}")
    return codes


def transition_matrix(
    base_states: pd.Series | Sequence[str], rl_states: pd.Series | Sequence[str]
) -> pd.DataFrame:
    """3 x 3 counts of facts by (base state, RL state), matched by position.

    The index is named ``base`` and the columns ``rl``; all nine cells are present.
    """
    base = state_codes(base_states)
    rl = state_codes(rl_states)
    if len(base) != len(rl):
        raise ValueError(f"base has {len(base)} states and rl has {len(rl)}; pass one state per fact for both")
    k = len(STATES)
    counts = np.bincount(base * k + rl, minlength=k * k).reshape(k, k)
    return pd.DataFrame(
        counts, index=pd.Index(STATES, name="base"), columns=pd.Index(STATES, name="rl"), dtype=np.int64
    )


def row_normalise(counts: pd.DataFrame) -> pd.DataFrame:
    """Each row divided by its total: P(RL state | base state). Rows with zero total are NaN."""
    values = counts.to_numpy(dtype=float)
    totals = values.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = np.where(totals > 0, values / np.where(totals > 0, totals, 1.0), np.nan)
    return pd.DataFrame(shares, index=counts.index, columns=counts.columns)


def _id_list(ids: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(repr(i) for i in ids[:limit])
    return shown + (f", ... ({len(ids) - limit} more)" if len(ids) > limit else "")


def merge_models(base_df: pd.DataFrame, rl_df: pd.DataFrame) -> pd.DataFrame:
    """One row per fact with both models' columns, suffixed ``_base`` and ``_rl``.

    Fact-level columns (``FACT_LEVEL_COLUMNS``: question, answers, subject, relation,
    object, popularity) are kept once, unsuffixed, taken from the base table (or
    the RL table when only it has them). Rows follow the base table's order.
    Raises ``ScoreTableError`` naming up to 10 missing ids on each side when the
    two tables do not hold the same facts.
    """
    for name, df in (("base", base_df), ("rl", rl_df)):
        if "fact_id" not in df.columns:
            raise ScoreTableError(f"{name} score table has no fact_id column")
        if df["fact_id"].duplicated().any():
            dup = df.loc[df["fact_id"].duplicated(), "fact_id"].iloc[0]
            raise ScoreTableError(f"{name} score table has duplicate fact_id {dup!r}")
    base_ids = base_df["fact_id"].astype(str)
    rl_ids = rl_df["fact_id"].astype(str)
    rl_set, base_set = set(rl_ids), set(base_ids)
    only_base = [i for i in base_ids if i not in rl_set]
    only_rl = [i for i in rl_ids if i not in base_set]
    if only_base or only_rl:
        raise ScoreTableError(
            "base and rl score tables hold different facts: "
            f"{len(only_base)} of {len(base_ids)} base facts are missing from rl ({_id_list(only_base)}); "
            f"{len(only_rl)} of {len(rl_ids)} rl facts are missing from base ({_id_list(only_rl)}). "
            "Score both models on the same facts file."
        )
    fact_cols = [c for c in FACT_LEVEL_COLUMNS if c in base_df.columns or c in rl_df.columns]
    left = base_df.assign(fact_id=base_ids.to_numpy())
    right = rl_df.assign(fact_id=rl_ids.to_numpy())
    facts = left[["fact_id"]].copy()
    right_by_id = right.set_index("fact_id")
    for col in fact_cols:
        if col in left.columns:
            facts[col] = left[col].to_numpy()
        else:
            facts[col] = right_by_id[col].reindex(left["fact_id"]).to_numpy()
    model_cols_base = [c for c in left.columns if c not in fact_cols and c != "fact_id"]
    model_cols_rl = [c for c in right.columns if c not in fact_cols and c != "fact_id"]
    b = left[["fact_id", *model_cols_base]].rename(columns={c: c + SUFFIXES[0] for c in model_cols_base})
    r = right[["fact_id", *model_cols_rl]].rename(columns={c: c + SUFFIXES[1] for c in model_cols_rl})
    merged = facts.merge(b, on="fact_id", how="left", validate="one_to_one")
    merged = merged.merge(r, on="fact_id", how="left", validate="one_to_one")
    return merged.reset_index(drop=True)


def model_view(merged: pd.DataFrame, suffix: str) -> pd.DataFrame:
    """One model's columns of a merged table, unsuffixed (plus fact_id and fact-level columns)."""
    if suffix not in SUFFIXES:
        raise ValueError(f"suffix must be one of {SUFFIXES}, got {suffix!r}")
    keep = {c: c[: -len(suffix)] for c in merged.columns if c.endswith(suffix)}
    shared = [c for c in merged.columns if c == "fact_id" or c in FACT_LEVEL_COLUMNS]
    return merged[shared + list(keep)].rename(columns=keep)


def state_shares(states_per_checkpoint: Mapping[str, pd.Series | Sequence[str]]) -> pd.DataFrame:
    """Tidy state shares over checkpoints (a training trajectory).

    Returns columns ``checkpoint, step, state, count, share`` with one row per
    (checkpoint, state), checkpoints in the mapping's order (``step`` is that
    position, 0-based) and states in ``schema.STATES`` order.
    """
    rows = []
    for step, (label, states) in enumerate(states_per_checkpoint.items()):
        codes = state_codes(states)
        counts = np.bincount(codes, minlength=len(STATES))
        total = int(counts.sum())
        for state, count in zip(STATES, counts):
            share = float(count) / total if total else float("nan")
            rows.append({"checkpoint": str(label), "step": step, "state": state, "count": int(count), "share": share})
    return pd.DataFrame(rows, columns=["checkpoint", "step", "state", "count", "share"])
