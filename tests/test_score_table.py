"""Score tables: columns, per-fact numbers, pass@k columns, cache hits and crash resume."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

import massshift.score.cache as sc
import massshift.score.table as st
from massshift.analysis.states import assign_states
from massshift.lm.sampling import GenerationConfig
from massshift.score.schema import SCORE_COLUMNS, check_score_table
from massshift.score.table import ScoreConfig, answer_counts, entropy_nats, score_facts


@pytest.fixture()
def facts(facts_frame):
    return facts_frame


CFG = ScoreConfig(generation=GenerationConfig(n_samples=8, max_new_tokens=4), chunk_size=3)


def test_table_has_the_contract_columns(tokenizer, tiny_model, facts):
    table = score_facts(tiny_model, tokenizer, facts, CFG, label="base")
    check_score_table(table)
    assert list(table.columns[: len(SCORE_COLUMNS)]) == list(SCORE_COLUMNS)
    # measurements only: states (and pass@k) are decided by analysis, never stored by scoring
    assert not [c for c in table.columns if c.startswith(("state", "pass_at_"))]
    assert set(assign_states(table)) <= {"greedy-correct", "tail-correct", "absent"}
    assert (table["model"] == "base").all() and list(table["fact_id"]) == list(facts["fact_id"])
    assert (table["relation"] == "capital").all()
    for _, row in table.iterrows():
        counts = json.loads(row["sample_answers"])
        assert sum(counts.values()) == row["n_samples"] == 8
        assert 0 <= row["n_correct"] <= 8
        assert row["answer_entropy"] == pytest.approx(entropy_nats(counts))
        assert math.isfinite(row["logp_gold"]) and row["logp_gold"] < 0
        assert row["best_alias"] in row["answers"]


def test_matcher_replaces_matching(tokenizer, tiny_model, facts):
    table = score_facts(tiny_model, tokenizer, facts, CFG, matcher=lambda pred, answers: True)
    assert table["greedy_correct"].all() and (table["n_correct"] == 8).all()
    assert (assign_states(table) == "greedy-correct").all()


def test_cache_hit_and_crash_resume(tokenizer, tiny_model, facts, tmp_path, monkeypatch):
    full = score_facts(tiny_model, tokenizer, facts, CFG, model_key="m", cache_dir=tmp_path / "a")
    calls = []
    crash = {"at": 2}
    real = st.score_chunk

    def crashing(model, tok, chunk, *args, **kw):
        calls.append(list(chunk["fact_id"]))
        if len(calls) == crash["at"]:
            raise RuntimeError("simulated crash")
        return real(model, tok, chunk, *args, **kw)

    monkeypatch.setattr(st, "score_chunk", crashing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        score_facts(tiny_model, tokenizer, facts, CFG, model_key="m", cache_dir=tmp_path / "b")
    chunks = sorted((tmp_path / "b" / "scores").glob("*/chunk-*.parquet"))
    assert len(chunks) == 1  # one finished chunk, nothing half-written
    assert not list((tmp_path / "b" / "scores").glob("*/.*tmp"))
    calls.clear()
    crash["at"] = -1
    resumed = score_facts(tiny_model, tokenizer, facts, CFG, model_key="m", cache_dir=tmp_path / "b")
    assert [len(c) for c in calls] == [3, 2]  # only the missing chunks were computed
    pd.testing.assert_frame_equal(resumed, full)
    calls.clear()
    again = score_facts(tiny_model, tokenizer, facts, CFG, model_key="m", cache_dir=tmp_path / "b")
    assert calls == []  # a repeated run computes nothing
    pd.testing.assert_frame_equal(again, full)
    # another setting is another cache entry, never a silent mix
    other = ScoreConfig(generation=GenerationConfig(n_samples=8, max_new_tokens=4, seed=1), chunk_size=3)
    score_facts(tiny_model, tokenizer, facts, other, model_key="m", cache_dir=tmp_path / "b")
    assert len(calls) == 3


def test_empty_facts_is_an_error(tokenizer, tiny_model, facts):
    with pytest.raises(ValueError, match="empty"):
        score_facts(tiny_model, tokenizer, facts.iloc[:0], CFG)


def test_helpers():
    assert answer_counts(["Paris", "the paris", "Rome"]) == {"paris": 2, "rome": 1}
    assert entropy_nats({"a": 2, "b": 2}) == pytest.approx(math.log(2))
    assert math.isnan(entropy_nats({}))
    with pytest.raises(ValueError, match="terminator"):
        from massshift.data.matching import MatchConfig
        ScoreConfig(match=MatchConfig(terminator="."))


def test_distractors_change_the_cache_key_and_are_cached(tokenizer, tiny_model, facts, tmp_path):
    gen = GenerationConfig(n_samples=0, max_new_tokens=3)
    plain, with_d = ScoreConfig(generation=gen), ScoreConfig(generation=gen, distractors=4, chunk_size=3)
    drawn = st.draw_distractors(facts, 4, 0)
    assert sc.fingerprint("m", plain, facts) != sc.fingerprint("m", with_d, facts, distractors=drawn)
    # relations decide the draw but are not in facts_hash: the drawn lists are in the key
    other = facts.assign(relation=["a", "b"] * (len(facts) // 2))
    redrawn = st.draw_distractors(other, 4, 0)
    assert redrawn != drawn
    assert sc.fingerprint("m", with_d, facts, distractors=drawn) != sc.fingerprint("m", with_d, other, distractors=redrawn)
    assert sc.fingerprint("m", plain, facts) == sc.fingerprint("m", plain, other)  # no distractors: key unchanged
    first = score_facts(tiny_model, tokenizer, facts, with_d, model_key="m", cache_dir=tmp_path)
    again = score_facts(tiny_model, tokenizer, facts, with_d, model_key="m", cache_dir=tmp_path)
    pd.testing.assert_frame_equal(first, again)
    assert list(first["n_distractors"]) == [len(d) for d in drawn] == [4] * len(facts)


def test_states_cached_by_older_versions_are_dropped(tokenizer, tiny_model, facts):
    from massshift.score.table import finish_table

    table = score_facts(tiny_model, tokenizer, facts, CFG, label="base")
    old = table.assign(state="greedy-correct", state_logprob="absent", pass_at_8=1.0)
    again = finish_table(old, "base")
    assert list(again.columns) == list(table.columns)
