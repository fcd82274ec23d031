"""State rules from hand-worked cases (tests/cases/states.json), config validation, SliCK classes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from massshift.analysis.states import (
    StateConfig,
    add_state_columns,
    agreement,
    assign_states,
    pairwise_agreement,
    slick_class,
)
from massshift.score.schema import STATES, ScoreTableError

CASES = json.loads((Path(__file__).parent / "cases" / "states.json").read_text())["cases"]
DEFAULT_EPS = 2.995732273553991 / 128  # -ln(0.05) / 128, written out


def _logp(value, eps: float) -> float:
    special = {"-inf": -math.inf, "nan": math.nan, "log(eps)": math.log(eps), "log(eps)-1e-9": math.log(eps) - 1e-9}
    return special[value] if isinstance(value, str) else float(value)


def _row(case: dict) -> tuple[pd.DataFrame, float | None]:
    eps = case["eps"]
    df = pd.DataFrame([{
        "fact_id": case["id"], "greedy_correct": case["greedy_correct"],
        "logp_gold": _logp(case["logp_gold"], eps if eps is not None else DEFAULT_EPS),
        "n_correct": case["n_correct"], "n_samples": case["n_samples"],
    }])
    return df, eps


def test_default_threshold_is_minus_log_alpha_over_n():
    cfg = StateConfig()
    assert cfg.threshold == pytest.approx(DEFAULT_EPS, rel=1e-12)
    assert cfg.threshold == pytest.approx(0.0234, abs=1e-4)
    assert StateConfig(n=8192).threshold == pytest.approx(3.657e-4, rel=1e-3)  # Wu et al.'s value
    assert StateConfig(eps=0.1).threshold == 0.1
    assert StateConfig(eps=0.1).log_threshold == pytest.approx(math.log(0.1))


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_hand_worked_states(case):
    df, eps = _row(case)
    got = assign_states(df, StateConfig(criterion="logprob", eps=eps)).iloc[0]
    assert got == case["expected_logprob"]
    if case["expected_sampling"] is None:
        with pytest.raises(ScoreTableError, match=case["id"]):
            assign_states(df, StateConfig(criterion="sampling", eps=eps))
    else:
        assert assign_states(df, StateConfig(criterion="sampling", eps=eps)).iloc[0] == case["expected_sampling"]


@pytest.mark.parametrize("kwargs, field", [
    ({"alpha": 0.0}, "alpha"), ({"alpha": 1.0}, "alpha"), ({"n": 0}, "n"), ({"n": 2.5}, "n"),
    ({"eps": 0.0}, "eps"), ({"eps": 1.5}, "eps"), ({"criterion": "votes"}, "criterion"),
])
def test_config_rejects_bad_values_with_a_fix(kwargs, field):
    with pytest.raises(ValueError, match=f"StateConfig.{field}"):
        StateConfig(**kwargs)


def _sampled_cases() -> tuple[pd.DataFrame, list[dict]]:
    rows = [c for c in CASES if c["n_samples"] > 0 and c["eps"] is None]
    return pd.concat([_row(c)[0] for c in rows], ignore_index=True), rows


def test_add_state_columns_and_agreement():
    df, rows = _sampled_cases()
    out = add_state_columns(df, StateConfig(criterion="sampling"))
    assert list(out["state_logprob"]) == [c["expected_logprob"] for c in rows]
    assert list(out["state_sampling"]) == [c["expected_sampling"] for c in rows]
    assert list(out["state"]) == list(out["state_sampling"])
    assert len(out) == len(df)  # -inf and NaN rows are kept
    same = sum(c["expected_logprob"] == c["expected_sampling"] for c in rows)
    assert agreement(out) == pytest.approx(same / len(rows))
    assert set(out["state"]) <= set(STATES)


def test_without_samples_only_the_logprob_state_is_added():
    df = pd.concat([_row(c)[0] for c in CASES if c["eps"] is None], ignore_index=True)
    out = add_state_columns(df)
    assert "state_sampling" not in out.columns
    assert list(out["state"]) == list(out["state_logprob"])
    with pytest.raises(ScoreTableError, match="no-samples"):
        add_state_columns(df, StateConfig(criterion="sampling"))
    with pytest.raises(ScoreTableError, match="add_state_columns"):
        agreement(out)


def test_missing_column_is_named():
    with pytest.raises(ScoreTableError, match="logp_gold"):
        assign_states(pd.DataFrame({"greedy_correct": [False]}))


def test_slick_classes_by_hand():
    df = pd.DataFrame({
        "fact_id": ["a", "b", "c", "d", "e"],
        "greedy_correct": [True, True, False, False, True],
        "n_correct": [8, 7, 1, 0, 0],
        "n_samples": [8, 8, 8, 8, 8],
    })
    assert list(slick_class(df)) == ["HighlyKnown", "MaybeKnown", "WeaklyKnown", "Unknown", "MaybeKnown"]
    with pytest.raises(ScoreTableError, match="fact_id z"):
        slick_class(pd.DataFrame({"fact_id": ["z"], "greedy_correct": [True], "n_correct": [0], "n_samples": [0]}))


def test_states_follow_the_index():
    df = pd.DataFrame({"greedy_correct": [False, True], "logp_gold": [np.log(0.5), -20.0]}, index=[10, 3])
    states = assign_states(df)
    assert states.loc[10] == "tail-correct" and states.loc[3] == "greedy-correct"


CHANCE_CASES = json.loads((Path(__file__).parent / "cases" / "chance_cases.json").read_text())["cases"]


def _chance_row(case: dict) -> tuple[pd.DataFrame, StateConfig]:
    cfg = StateConfig(criterion="chance", chance_ratio=case["chance_ratio"] or 2.0, chance_top=case["chance_top"] or 0.25)
    median = math.nan if case["logp_median_distractor"] == "nan" else float(case["logp_median_distractor"])
    logp = case["logp_gold"]
    if logp == "median+log(ratio)":
        logp = median + math.log(cfg.chance_ratio)
    elif logp == "median+log(ratio)-1e-9":
        logp = median + math.log(cfg.chance_ratio) - 1e-9
    df = pd.DataFrame([{
        "fact_id": case["id"], "greedy_correct": case["greedy_correct"], "logp_gold": float(logp),
        "gold_rank": float(case["gold_rank"]), "n_distractors": case["n_distractors"],
        "logp_median_distractor": median, "logp_best_distractor": median, "k_q": math.nan,
    }])
    return df, cfg


@pytest.mark.parametrize("case", CHANCE_CASES, ids=[c["id"] for c in CHANCE_CASES])
def test_hand_worked_chance_states(case):
    df, cfg = _chance_row(case)
    assert assign_states(df, cfg).iloc[0] == case["expected_chance"]
    assert assign_states(df, StateConfig(criterion="logprob")).iloc[0] == case["expected_logprob"]


def test_auto_resolves_to_chance_only_with_distractor_columns():
    df = pd.concat([_chance_row(c)[0] for c in CHANCE_CASES if c["chance_ratio"] is None and c["chance_top"] is None],
                   ignore_index=True)
    rows = [c for c in CHANCE_CASES if c["chance_ratio"] is None and c["chance_top"] is None]
    assert StateConfig().criterion == "auto"
    assert StateConfig().resolve(df).criterion == "chance"
    assert StateConfig().resolve(df.drop(columns=["k_q"])).criterion == "logprob"
    assert StateConfig(criterion="logprob").resolve(df).criterion == "logprob"  # explicit criteria stay
    out = add_state_columns(df)
    assert list(out["state_chance"]) == [c["expected_chance"] for c in rows]
    assert list(out["state_logprob"]) == [c["expected_logprob"] for c in rows]
    assert list(out["state"]) == list(out["state_chance"])
    assert list(add_state_columns(df, StateConfig(criterion="logprob"))["state"]) == list(out["state_logprob"])
    same = sum(c["expected_chance"] == c["expected_logprob"] for c in rows)
    assert pairwise_agreement(out) == {"logprob~chance": pytest.approx(same / len(rows))}
    plain = df.drop(columns=["gold_rank"])
    assert "state_chance" not in add_state_columns(plain).columns
    with pytest.raises(ScoreTableError, match="gold_rank"):
        add_state_columns(plain, StateConfig(criterion="chance"))


@pytest.mark.parametrize("kwargs, field", [
    ({"chance_ratio": 0.0}, "chance_ratio"), ({"chance_ratio": math.inf}, "chance_ratio"),
    ({"chance_top": 0.0}, "chance_top"), ({"chance_top": 1.5}, "chance_top"),
])
def test_chance_settings_are_validated(kwargs, field):
    with pytest.raises(ValueError, match=f"StateConfig.{field}"):
        StateConfig(**kwargs)
