"""Distractor drawing (seeded, never an alias, same relation, template fallback), rank and K_q by hand and on a model."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from conftest import FACTS
from massshift.data.matching import normalize
from massshift.lm.sampling import GenerationConfig
from massshift.score.distractors import distractor_stats, draw_distractors, template_key
from massshift.score.table import ScoreConfig, score_facts


def _world() -> pd.DataFrame:
    rows = []
    cities = ["Paris", "Berlin", "Rome", "London", "Madrid", "Tokyo", "Lisbon", "Vienna"]
    for i, c in enumerate(cities):
        rows.append({"fact_id": f"c{i}", "question": f"Where was person {i} born?", "answers": [c],
                     "relation": "birth_city", "subject": f"person {i}"})
    pets = ["cat", "dog", "Cat", "parrot"]  # "Cat" duplicates "cat" after normalisation
    for i, p in enumerate(pets):
        rows.append({"fact_id": f"p{i}", "question": f"What pet does person {i} have?", "answers": [p],
                     "relation": "pet", "subject": f"person {i}"})
    return pd.DataFrame(rows)


def test_same_relation_never_an_alias_deduplicated_and_seeded():
    facts = _world()
    facts.loc[0, "answers"] = ["Paris", "the Berlin"]  # an alias normalising to another fact's answer
    d = draw_distractors(facts, k=20, seed=0)
    for (_, row), drawn in zip(facts.iterrows(), d):
        same = {normalize(a[0]) for a, r in zip(facts["answers"], facts["relation"]) if r == row["relation"]}
        own = {normalize(a) for a in row["answers"]}
        assert {normalize(x) for x in drawn} <= same - own
        assert len({normalize(x) for x in drawn}) == len(drawn)  # deduplicated
    assert sorted(d[0]) == sorted(["Rome", "London", "Madrid", "Tokyo", "Lisbon", "Vienna"])  # not Paris, not Berlin
    assert sorted(d[1]) == sorted(["Paris", "Rome", "London", "Madrid", "Tokyo", "Lisbon", "Vienna"])
    assert sorted(d[8]) == ["dog", "parrot"]  # pets: cat (and Cat) are this fact's answer
    assert sorted(d[11]) == ["cat", "dog"]
    assert d == draw_distractors(facts, k=20, seed=0)
    small = draw_distractors(facts, k=3, seed=0)
    assert all(len(x) == 3 for x in small[:8]) and all(set(s) <= set(f) for s, f in zip(small, d))
    # seeded per (seed, fact_id): a subset in another order draws the same
    sub = facts.iloc[[5, 2]]
    assert draw_distractors(sub, k=1, seed=0) == draw_distractors(facts.iloc[[2, 5]], k=1, seed=0)[::-1]
    assert draw_distractors(facts, k=3, seed=1) != small  # another seed, another draw (8 facts of 7 choose 3)
    assert draw_distractors(facts, k=0) == [[] for _ in range(len(facts))]


def test_template_fallback_without_relation():
    assert template_key("Where was Ada Lovelace born?", "Ada Lovelace") == "where was <subject> born"
    assert template_key("What is the capital of France?") == "what is capital"  # first 3 normalised words
    assert template_key("What is the capital of France?", "Atlantis") == "what is capital"  # subject absent
    facts = pd.DataFrame({"fact_id": [f"f{i}" for i in range(len(FACTS))],
                          "question": [f["question"] for f in FACTS], "answers": [f["answers"] for f in FACTS]})
    d = draw_distractors(facts, k=20, seed=0)
    capitals = {"Paris", "Berlin", "Rome", "Madrid", "Tokyo", "Vienna"}
    assert set(d[0]) == capitals - {"Paris"}
    assert set(d[2]) == capitals - {"Rome"}
    assert d[3] == [] and d[4] == []  # "where was ada" and "who wrote hamlet" have no partner


def test_rank_and_kq_by_hand():
    s = distractor_stats(-2.0, [-1.0, -2.0, -3.0, -5.0, float("nan")])
    assert s["n_distractors"] == 4
    assert s["gold_rank"] == 3.0  # -1 and the tie -2 are at or above the gold
    assert s["k_q"] == pytest.approx((2 + 0.5) / 4)
    assert s["logp_best_distractor"] == -1.0 and s["logp_median_distractor"] == pytest.approx(-2.5)
    top = distractor_stats(-0.5, [-1.0, -4.0])
    assert top["gold_rank"] == 1.0 and top["k_q"] == 1.0
    inf = distractor_stats(-math.inf, [-math.inf, -3.0])
    assert inf["gold_rank"] == 3.0 and inf["k_q"] == pytest.approx(0.25)
    none = distractor_stats(-1.0, [])
    assert none["n_distractors"] == 0 and math.isnan(none["gold_rank"]) and math.isnan(none["k_q"])


def _plain_logp(model, tokenizer, question: str, answer: str) -> float:
    import torch

    prompt = f"Q: {question}\nA:"
    ctx = tokenizer(prompt).input_ids
    whole = tokenizer(prompt + f" {answer}\n").input_ids
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([whole])).logits[0].float(), -1)
    return float(sum(logp[t - 1, whole[t]] for t in range(len(ctx), len(whole))))


def test_scored_distractors_match_a_plain_forward_pass(tokenizer, tiny_model):
    facts = pd.DataFrame({"fact_id": [f"f{i}" for i in range(len(FACTS))],
                          "question": [f["question"] for f in FACTS], "answers": [f["answers"] for f in FACTS],
                          "relation": ["capital"] * len(FACTS)})
    gen = GenerationConfig(n_samples=0, max_new_tokens=3)
    plain = score_facts(tiny_model, tokenizer, facts, ScoreConfig(generation=gen))
    assert "gold_rank" not in plain.columns and "state_chance" not in plain.columns
    cfg = ScoreConfig(generation=gen, distractors=3, chunk_size=3)
    assert cfg.numbers_key() != ScoreConfig(generation=gen).numbers_key()
    assert "distractors" not in ScoreConfig(generation=gen).numbers_key()  # old cache keys unchanged
    table = score_facts(tiny_model, tokenizer, facts, cfg)
    assert table["logp_gold"].to_numpy() == pytest.approx(plain["logp_gold"].to_numpy(), abs=1e-5)
    from massshift.analysis.states import add_state_columns

    assert "state_chance" in add_state_columns(table).columns  # distractors make the chance criterion possible
    expected = draw_distractors(facts, 3, 0)
    for (_, row), drawn in zip(table.iterrows(), expected):
        assert list(row["distractors"]) == drawn and row["n_distractors"] == 3
        d = [_plain_logp(tiny_model, tokenizer, row["question"], x) for x in drawn]
        assert list(row["distractor_logps"]) == pytest.approx(d, abs=1e-4)
        g = row["logp_gold"]
        assert row["gold_rank"] == 1 + sum(x >= g for x in d)
        assert row["k_q"] == pytest.approx(sum(g > x for x in d) / 3)
        assert row["logp_best_distractor"] == pytest.approx(max(d), abs=1e-4)
        assert row["logp_median_distractor"] == pytest.approx(sorted(d)[1], abs=1e-4)


def test_config_rejects_negative_distractors():
    with pytest.raises(ValueError, match="ScoreConfig.distractors"):
        ScoreConfig(distractors=-1)


def _prior_table():
    """Four facts of one relation; 'Rome' is scored as a distractor for three other subjects."""
    return pd.DataFrame({
        "fact_id": ["a", "b", "c", "d"],
        "question": ["Where was A born?", "Where was B born?", "Where was C born?", "Where was D born?"],
        "relation": ["birth_city"] * 4,
        "answers": [["Rome", "Roma"], ["Paris"], ["Oslo"], ["Lima"]],
        "logp_gold": [-1.0, -2.0, -3.0, -0.5],
        "distractors": [["Paris", "Oslo"], ["Rome", "Oslo"], ["ROME", "Lima"], ["Roma", "Paris"]],
        "distractor_logps": [[-4.0, -5.0], [-0.5, -6.0], [-1.0, -7.0], [-3.0, -0.2]],
    })


def test_value_prior_by_hand():
    from massshift.score.distractors import ValuePrior, value_prior_columns

    cols = value_prior_columns(_prior_table())
    # a (Rome, alias Roma): other subjects gave Rome -0.5 (b), -1.0 (c, as "ROME"), Roma -3.0 (d);
    # logp_gold -1.0 beats -3.0, ties -1.0 (half), loses to -0.5 -> (1 + 0.5) / 3
    assert cols.loc[0, "prior_n"] == 3 and cols.loc[0, "prior_quantile"] == pytest.approx(1.5 / 3)
    # b (Paris): scored for a (-4.0) and d (-0.2); gold -2.0 beats one of two
    assert cols.loc[1, "prior_n"] == 2 and cols.loc[1, "prior_quantile"] == pytest.approx(0.5)
    # c (Oslo): -5.0 (a), -6.0 (b); gold -3.0 beats both. d (Lima): -7.0 (c); gold beats it
    assert list(cols["prior_quantile"][2:]) == [1.0, 1.0] and list(cols["prior_n"][2:]) == [2, 1]
    # fed chunk by chunk, the pool is the same
    prior = ValuePrior()
    t = _prior_table()
    prior.add(t.iloc[:2])
    prior.add(t.iloc[2:])
    pd.testing.assert_frame_equal(prior.columns(t), cols)


def test_value_prior_rule_of_the_chance_criterion():
    """Rule 4: a fact passing rules 1-3 is tail-correct only if its gold is subject-specific."""
    from massshift.analysis.states import MIN_PRIOR, StateConfig, assign_states

    n = MIN_PRIOR + 2
    rows = pd.DataFrame({
        "fact_id": ["generic", "specific", "few"], "greedy_correct": [False] * 3, "logp_gold": [-1.0] * 3,
        "gold_rank": [1.0] * 3, "k_q": [1.0] * 3, "logp_best_distractor": [-3.0] * 3,
        "logp_median_distractor": [-5.0] * 3, "n_distractors": [20] * 3,
        "prior_quantile": [0.5, 0.97, 0.1], "prior_n": [n, n, MIN_PRIOR - 1],
    })
    states = list(assign_states(rows, StateConfig(criterion="chance")))
    assert states == ["absent", "tail-correct", "tail-correct"]  # too few prior scores: rules 1-3 decide
    off = list(assign_states(rows, StateConfig(criterion="chance", chance_specificity=0)))
    assert off == ["tail-correct"] * 3
    with pytest.raises(ValueError, match="chance_specificity"):
        StateConfig(chance_specificity=1.0)
