"""Answer matching: normalisation, extraction, exact and contains modes, property tests."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from massshift.data.matching import MatchConfig, extract_answer, is_correct, normalize


@pytest.mark.parametrize("text,expected", [
    ("The Eiffel Tower!", "eiffel tower"),
    ("  an   Apple, a day ", "apple day"),
    ("São Tomé.", "são tomé"),
    ("«Paris»", "paris"),
    ("Theatre", "theatre"),
    ("", ""),
])
def test_normalize(text, expected):
    assert normalize(text) == expected


def test_extract_answer():
    assert extract_answer(" Paris\nQ: next") == "Paris"
    assert extract_answer("  Rome  ") == "Rome"
    assert extract_answer("a.b|c", terminator="|") == "a.b"


def test_exact_mode():
    assert is_correct("the Paris.", ["Paris"])
    assert not is_correct("Paris, France", ["Paris"])
    assert is_correct("Paris, France", ["Paris", "Paris France"])
    assert not is_correct("", ["Paris"])
    assert not is_correct("The capital is Paris", ["Paris"])


def test_contains_mode():
    assert is_correct("The capital of Alabama is Montgomery.", ["Montgomery"], mode="contains")
    assert not is_correct("Montgomeryville", ["Montgomery"], mode="contains")  # whole words only
    assert not is_correct("It is " + "very " * 12 + "Montgomery", ["Montgomery"], mode="contains")
    assert is_correct("It is " + "very " * 12 + "Montgomery", ["Montgomery"], mode="contains", max_words=20)


def test_contains_guards_against_listing_candidates():
    hedge = "Africa, Asia, Europe"
    assert is_correct(hedge, ["Asia"], mode="contains")  # the risk, without distractors
    assert not is_correct(hedge, ["Asia"], mode="contains", distractors=["Africa", "Europe"])
    # a distractor that is part of the gold answer does not count against it
    assert is_correct("South Africa", ["South Africa"], mode="contains", distractors=["Africa"])


def test_unknown_mode():
    with pytest.raises(ValueError, match="exact"):
        is_correct("a", ["a"], mode="fuzzy")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="match mode"):
        MatchConfig(mode="fuzzy")  # type: ignore[arg-type]


def test_matcher_callable():
    m = MatchConfig(mode="contains", max_words=3).matcher()
    assert m("It's Rome.", ["Rome"])
    assert not m("I think it is Rome", ["Rome"])


@given(st.text())
def test_normalize_idempotent(text):
    assert normalize(normalize(text)) == normalize(text)


@given(st.text().filter(lambda t: any(ch.isalnum() for ch in normalize(t))))
def test_answer_matches_itself(text):
    assert is_correct(text, [text], mode="exact")
    assert is_correct(text, [text], mode="contains", max_words=10**6)


@given(st.text(), st.lists(st.text(), max_size=4), st.sampled_from(["exact", "contains"]))
def test_never_crashes(pred, answers, mode):
    assert is_correct(pred, answers, mode=mode) in (True, False)


def test_contains_reward_is_anti_hedging():
    import pandas as pd

    from massshift.data.matching import contains_reward, relation_values

    facts = pd.DataFrame({"relation": ["capital", "capital", "currency"],
                          "answers": [["Paris"], ["Rome", "Roma"], ["euro"]]})
    values = relation_values(facts)
    assert values == {("Paris",): ["Rome"], ("Rome", "Roma"): ["Paris"], ("euro",): []}
    reward = contains_reward(values)
    assert reward("The capital is Paris.", ["Paris"]) == 1.0
    assert reward("Paris or Rome", ["Paris"]) == 0.0  # names another value of the relation
    assert reward("Roma, not Paris", ["Rome", "Roma"]) == 0.0
    assert reward("the euro", ["euro"]) == 1.0


def test_grpo_contains_reward_uses_the_relation(tiny_model, tokenizer, tmp_path, caplog):
    """`train rl --match contains` on facts with relations rewards hedges with 0 (issue 12)."""
    import copy
    import logging

    import pandas as pd

    from conftest import FACTS
    from massshift.train.grpo import GRPOConfig, train_grpo

    facts = pd.DataFrame([{"fact_id": str(i), "relation": "r", **f} for i, f in enumerate(FACTS[:4])])
    cfg = GRPOConfig(steps=1, batch_size=2, num_generations=2, lr=1e-3, max_new_tokens=4, match_mode="contains",
                     save_every=0)
    with caplog.at_level(logging.INFO, logger="massshift.train.grpo"):
        train_grpo(copy.deepcopy(tiny_model), tokenizer, facts, tmp_path, cfg)
    assert "also names another value of the relation" in caplog.text
