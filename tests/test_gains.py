"""Gain kinds, answer diversity and the constant-answer baseline on hand-built tables."""

import numpy as np
import pandas as pd
import pytest

from massshift.analysis.answers import ValueIndex, collapse_warning, diversity, named_values
from massshift.analysis.constant import constant_answers, constant_baseline
from massshift.analysis.estimators import Bootstrap, StatsConfig
from massshift.analysis.gains import decompose, gain_kinds, gain_sentence


def _merged(rows):
    df = pd.DataFrame(rows, columns=["relation", "subject", "answers", "greedy_base", "greedy_rl"])
    df["fact_id"] = [f"f{i}" for i in range(len(df))]
    df["question"] = [f"Q about {s}" for s in df["subject"]]
    exact = lambda g, a: isinstance(g, str) and g.lower() in {x.lower() for x in a}  # noqa: E731
    df["greedy_correct_base"] = [exact(g, a) for g, a in zip(df["greedy_base"], df["answers"])]
    df["greedy_correct_rl"] = [exact(g, a) for g, a in zip(df["greedy_rl"], df["answers"])]
    return df


COLLAPSE = _merged([
    ("color", "s0", ["red"], "purple", "red"),
    ("color", "s1", ["blue"], "purple", "red"),
    ("color", "s2", ["green"], "purple", "red"),
    ("color", "s3", ["red"], "purple", "red"),
    ("color", "s4", ["yellow"], "purple", "red"),
    ("color", "s5", ["red"], "purple", "red"),
])


def test_constant_answer_makes_every_gain_a_guess():
    gain, loss, tests = gain_kinds(COLLAPSE, ["tail-correct"] * 6)
    assert gain.tolist() == ["guess", None, None, "guess", None, "guess"]
    assert loss.isna().all()
    assert tests == {"format": True, "collapse": True, "prior": False}
    d = decompose(COLLAPSE, gain, loss, tests, Bootstrap(6, StatsConfig(n_boot=200)))
    assert d["n_gained"] == 3 and d["kinds"]["guess"]["count"] == 3 and d["kinds"]["guess"]["share"] == 1.0
    assert d["kinds"]["recall"]["count"] == 0
    sentence = gain_sentence(d)
    assert "3 guess" in sentence and "most of the gain is rl giving one value to many subjects" in sentence


def test_the_verdict_says_most_only_for_a_majority():
    def decomp(**counts):
        kinds = {k: {"count": counts.get(k, 0)} for k in ("format", "guess", "recall", "acquisition")}
        return {"n_gained": sum(counts.values()), "kinds": kinds, "tests": {"format": True}}

    plural = gain_sentence(decomp(format=2, guess=6, recall=17, acquisition=14))  # the SmolLM2 study's GRPO gains
    assert "most of" not in plural and "no kind is a majority; the largest (17 of 39) is recall" in plural
    assert "most of the gain is recall" in gain_sentence(decomp(recall=3, guess=2))
    assert "the largest (2 of 4) is rl giving one value" in gain_sentence(decomp(guess=2, recall=2))  # a tie: no majority
    rows = diversity(COLLAPSE, "greedy_rl")
    assert rows[0]["collapsed"] and rows[0]["top_value"] == "red" and rows[0]["distinct_values"] == 1
    assert "color: 'red' to 6 of 6" in collapse_warning("rl", rows)
    assert not diversity(COLLAPSE, "greedy_base")[0]["collapsed"]  # purple is no value of the relation
    assert diversity(COLLAPSE, "greedy_base")[0]["evasions"] == 6


def test_each_kind_in_order():
    df = _merged([
        ("capital", "France", ["Paris"], "The capital is Paris.", "Paris"),   # base named gold: format
        ("capital", "Peru", ["Lima"], "Quito", "Lima"),                       # base tail: recall
        ("capital", "Chile", ["Santiago"], "Quito", "Santiago"),              # base absent: acquisition
        ("capital", "Ecuador", ["Quito"], "Quito", "Quito"),                  # kept
        ("capital", "Spain", ["Madrid"], "Madrid", "It is Madrid, I think"),  # lost, still names gold
        ("capital", "Italy", ["Rome"], "Rome", "I do not know"),              # lost: evasion
        ("capital", "Japan", ["Tokyo"], "Tokyo", "Lima"),                     # lost: other value
        ("capital", "Cuba", ["Havana"], "Lima", "Rome"),                      # neither
    ])
    states = ["tail-correct", "tail-correct", "absent", "greedy-correct", "greedy-correct",
              "greedy-correct", "greedy-correct", "absent"]
    gain, loss, _ = gain_kinds(df, states)
    assert gain.tolist() == ["format", "recall", "acquisition", None, None, None, None, None]
    assert loss.tolist() == [None, None, None, None, "format", "evasion", "other", None]


def test_a_hedge_is_not_format():
    df = _merged([
        ("capital", "France", ["Paris"], "Paris or Lyon", "Paris"),
        ("capital", "Lyonland", ["Lyon"], "x", "y"),
        ("capital", "Peru", ["Lima"], "x", "y"),
        ("capital", "Chile", ["Santiago"], "x", "y"),
    ])
    gain, _, _ = gain_kinds(df, ["absent"] * 4)
    assert gain.iloc[0] == "acquisition"


def test_value_prior_failure_is_a_guess():
    df = _merged([("capital", f"c{i}", [f"v{i}"], "x", f"v{i}") for i in range(5)])
    df["prior_quantile_rl"] = [0.5, 0.99, np.nan, 0.5, 0.2]
    df["prior_n_rl"] = [20, 20, 20, 5, 20]
    gain, _, tests = gain_kinds(df, ["tail-correct"] * 5)
    assert tests["prior"] is True
    assert gain.tolist() == ["guess", "recall", "recall", "recall", "guess"]


def test_without_relations_the_collapse_test_is_reported_as_not_run():
    df = COLLAPSE.drop(columns=["relation"])
    gain, _, tests = gain_kinds(df, ["absent"] * 6)
    assert tests["collapse"] is False and gain.dropna().tolist() == ["acquisition"] * 3
    d = decompose(df, gain, pd.Series([None] * 6), tests, Bootstrap(6, StatsConfig(n_boot=50)))
    assert "not run: the collapse and prior tests" in gain_sentence(d)
    assert diversity(df, "greedy_rl") == []


def test_values_are_named_not_strings():
    idx = ValueIndex.build([["New York City", "NYC"], ["York"], ["Paris"]])
    assert idx.named("I live in New York City.") == "New York City"  # longest at the first position
    assert idx.named("nyc!") == "New York City"
    assert idx.named("York, then Paris") == "York"
    assert idx.named("Berlin") is None
    # sentences naming one value count as one value: diversity recounted by hand
    df = _merged([("city", f"s{i}", [v], "", a) for i, (v, a) in enumerate([
        ("Paris", "It is Paris."), ("Lyon", "Paris, I believe"), ("Nice", "The answer: Paris"),
        ("Lille", "Lille."), ("Metz", "no idea")])])
    rows = diversity(df, "greedy_rl")[0]
    assert named_values(df, "greedy_rl").tolist() == ["Paris", "Paris", "Paris", "Lille", None]
    assert (rows["distinct_values"], rows["top_count"], rows["evasions"]) == (2, 3, 1)
    assert rows["top_share"] == pytest.approx(3 / 5) and rows["collapsed"]


def test_constant_baseline_by_hand():
    test = pd.DataFrame({"relation": ["r", "r", "r", "r", "q", "q"],
                         "answers": [["oak"], ["oak"], ["elm"], ["fir"], ["cat"], ["dog"]]})
    # leave-one-out: fact 0 sees {oak:1, elm:1, fir:1} -> elm (tie: alphabetical); fact 1 the same -> elm;
    # fact 2 {oak:2, fir:1} -> oak; fact 3 {oak:2, elm:1} -> oak; fact 4 sees {dog} -> dog; fact 5 {cat} -> cat
    assert constant_answers(test) == ["elm", "elm", "oak", "oak", "dog", "cat"]
    out = constant_baseline(test)
    assert out["source"] == "leave-one-out" and out["accuracy"]["value"] == 0.0
    train = pd.DataFrame({"relation": ["r", "r", "r", "q"], "answers": [["oak"], ["oak"], ["fir"], ["dog"]]})
    assert constant_answers(test, train) == ["oak", "oak", "oak", "oak", "dog", "dog"]
    out = constant_baseline(test, train, boot=Bootstrap(6, StatsConfig(n_boot=100)))
    assert out["source"] == "train" and out["accuracy"]["value"] == pytest.approx(3 / 6)
    assert out["accuracy"]["ci"][0] <= 0.5 <= out["accuracy"]["ci"][1]
    assert {r["relation"]: r["accuracy"] for r in out["per_relation"]} == {"q": 0.5, "r": 0.5}
    assert {r["relation"]: r["answer"] for r in out["per_relation"]} == {"q": "dog", "r": "oak"}
