"""Transition counts from hand-worked cases (tests/cases/transitions.json), merging, trajectories."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _score_tables import make_pair

from massshift.analysis.transitions import (
    merge_models,
    model_view,
    row_normalise,
    state_shares,
    transition_matrix,
)
from massshift.score.schema import STATES, ScoreTableError

CASES = json.loads((Path(__file__).parent / "cases" / "transitions.json").read_text())["cases"]


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_hand_worked_matrix(case):
    base = [b for b, _ in case["pairs"]]
    rl = [r for _, r in case["pairs"]]
    counts = transition_matrix(pd.Series(base), pd.Series(rl))
    assert list(counts.index) == list(STATES) and list(counts.columns) == list(STATES)
    assert counts.index.name == "base" and counts.columns.name == "rl"
    assert counts.to_numpy().tolist() == case["expected"]
    shares = row_normalise(counts).to_numpy()
    expected = np.array([[np.nan if v is None else v for v in row] for row in case["expected_row_share"]])
    np.testing.assert_allclose(shares, expected, equal_nan=True)


def test_unknown_state_and_length_mismatch_raise():
    with pytest.raises(ValueError, match="unknown state"):
        transition_matrix(["greedy-correct"], ["maybe"])
    with pytest.raises(ValueError, match="one state per fact"):
        transition_matrix(["absent", "absent"], ["absent"])


def test_merge_models_suffixes_model_columns_and_keeps_fact_columns_once():
    base, (rl,) = make_pair(n=30, seed=3)
    rl = rl.iloc[::-1].reset_index(drop=True)  # order must not matter
    merged = merge_models(base, rl)
    assert list(merged["fact_id"]) == list(base["fact_id"])
    for col in ("question", "answers", "relation", "popularity"):
        assert col in merged.columns and f"{col}_base" not in merged.columns
    for col in ("greedy_correct", "logp_gold", "n_correct", "model"):
        assert f"{col}_base" in merged.columns and f"{col}_rl" in merged.columns
    by_id = rl.set_index("fact_id")
    for _, row in merged.iterrows():
        assert row["n_correct_rl"] == by_id.loc[row["fact_id"], "n_correct"]
        assert row["greedy_correct_rl"] == by_id.loc[row["fact_id"], "greedy_correct"]
    view = model_view(merged, "_rl")
    assert view.set_index("fact_id").loc[rl["fact_id"], "n_correct"].tolist() == rl["n_correct"].tolist()
    assert len(merged) == 30 and np.isnan(merged["logp_gold_base"].iloc[1])  # NaN rows kept


def test_merge_refuses_different_fact_sets_naming_ids():
    base, (rl,) = make_pair(n=40, seed=4)
    rl_short = rl.iloc[:28]  # 12 facts missing from rl
    with pytest.raises(ScoreTableError) as err:
        merge_models(base, rl_short)
    msg = str(err.value)
    assert "12 of 40 base facts are missing from rl" in msg
    for fid in base["fact_id"].iloc[28:38]:
        assert repr(fid) in msg
    assert repr(base["fact_id"].iloc[39]) not in msg and "(2 more)" in msg
    assert "0 of 28 rl facts are missing from base" in msg
    extra = pd.concat([rl, rl.iloc[:1].assign(fact_id="stranger")], ignore_index=True)
    with pytest.raises(ScoreTableError, match="1 of 41 rl facts are missing from base \\('stranger'\\)"):
        merge_models(base, extra)


def test_state_shares_over_checkpoints():
    traj = {
        "base": ["absent", "tail-correct", "tail-correct", "greedy-correct"],
        "step-10": ["tail-correct", "greedy-correct", "tail-correct", "greedy-correct"],
        "step-20": ["greedy-correct"] * 4,
    }
    shares = state_shares({k: pd.Series(v) for k, v in traj.items()})
    assert list(shares.columns) == ["checkpoint", "step", "state", "count", "share"]
    assert len(shares) == 9
    for step, (label, states) in enumerate(traj.items()):
        counts = Counter(states)
        for state in STATES:
            row = shares[(shares["checkpoint"] == label) & (shares["state"] == state)].iloc[0]
            assert row["step"] == step and row["count"] == counts[state]
            assert row["share"] == pytest.approx(counts[state] / len(states))
