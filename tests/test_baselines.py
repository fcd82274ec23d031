"""Baselines: majority vote on hand-made samples, k-shot shots never from the test facts, chain of thought
against a plain greedy loop, accuracy table."""

from __future__ import annotations

import pandas as pd
import pytest

from conftest import FACTS
from massshift.data.matching import MatchConfig
from massshift.lm.prompts import PromptConfig, build_prompt
from massshift.studies.baselines import (
    COT_INSTRUCTION,
    BaselineConfig,
    accuracy_table,
    baseline_accuracy,
    cot_baseline,
    draw_shots,
    majority_vote,
    run_baselines,
    shot_pool,
)


@pytest.fixture(scope="module")
def facts() -> pd.DataFrame:
    return pd.DataFrame([{"fact_id": str(i), **f} for i, f in enumerate(FACTS)])


@pytest.mark.parametrize(("samples", "expected"), [
    (["Paris", "the paris.", "London", "Rome"], "Paris"),  # normalised forms are counted together
    (["London", "Paris", "paris", "LONDON"], "London"),  # 2-2 tie: the first seen wins
    (["Rome", "Berlin", "Paris"], "Rome"),  # all tied
    (["", "", "Paris"], ""),  # an empty answer is a vote
    ([], ""),
    (["x", "The Hague", "the hague", "Hague"], "The Hague"),
])
def test_majority_vote_hand_made(samples, expected):
    assert majority_vote(samples) == expected


def test_shot_pool_drops_test_facts_by_id_and_question(facts):
    test = facts.iloc[:3]
    train = pd.concat([facts.iloc[2:], pd.DataFrame([
        {"fact_id": "x1", "question": "what is the CAPITAL of France", "answers": ["Paris"]},
    ])], ignore_index=True)
    pool = shot_pool(train, test)
    assert "2" not in set(pool["fact_id"]) and "x1" not in set(pool["fact_id"])
    assert list(pool["fact_id"]) == ["3", "4", "5", "6", "7"]


def test_draw_shots_is_seeded_per_fact(facts):
    pool = facts.iloc[3:]
    a = draw_shots(pool, 3, seed=0, fact_id="0")
    assert a == draw_shots(pool, 3, seed=0, fact_id="0")
    assert len(set(a)) == 3 and all(ans == pool.set_index("question").loc[q, "answers"][0] for q, ans in a)
    others = {draw_shots(pool, 3, seed=s, fact_id=f) for s in range(3) for f in ("0", "1")}
    assert len(others) > 1
    with pytest.raises(ValueError, match="lower shots"):
        draw_shots(pool, 6, seed=0, fact_id="0")


def test_run_baselines_rows_and_kshot_never_uses_test_facts(tiny_model, tokenizer, facts, monkeypatch):
    test, train = facts.iloc[:3], facts  # train overlaps test on purpose
    seen_prompts: list[str] = []
    import massshift.studies.baselines as bl

    real = bl.prompt_ids_for

    def spy(tok, questions, prompt):
        seen_prompts.extend(build_prompt(q, prompt, tok) for q in questions)
        return real(tok, questions, prompt)

    monkeypatch.setattr(bl, "prompt_ids_for", spy)
    cfg = BaselineConfig(methods=("greedy", "majority", "kshot"), n_samples=4, max_new_tokens=3, shots=2, n_boot=200)
    out = run_baselines(tiny_model, tokenizer, test, train, cfg)
    assert list(out.columns) == ["fact_id", "method", "prediction", "correct"]
    assert out.groupby("method").size().to_dict() == {"greedy": 3, "majority@4": 3, "2-shot": 3}
    kshot_prompts = [p for p in seen_prompts if p.count("Q:") > 1]
    assert len(kshot_prompts) == 3
    for p, q in zip(kshot_prompts, test["question"]):
        assert p.endswith(build_prompt(q, PromptConfig()))
        shots_text = p[: -len(build_prompt(q, PromptConfig()))]
        assert shots_text.count("Q:") == 2
        for tq in test["question"]:
            assert tq not in shots_text
    table = baseline_accuracy(out, cfg)
    assert list(table["method"]) == ["greedy", "majority@4", "2-shot"] and (table["n"] == 3).all()
    with pytest.raises(ValueError, match="train_facts"):
        run_baselines(tiny_model, tokenizer, test, None, cfg)


def test_accuracy_table_values():
    t = accuracy_table({"a": pd.Series([True, True, False, False]), "b": [True] * 10}, n_boot=500, seed=1)
    a, b = t.iloc[0], t.iloc[1]
    assert a["accuracy"] == 0.5 and a["n"] == 4 and 0 <= a["ci_low"] < 0.5 < a["ci_high"] <= 1
    assert (b["accuracy"], b["ci_low"], b["ci_high"], b["n"]) == (1.0, 1.0, 1.0, 10)
    again = accuracy_table({"a": pd.Series([True, True, False, False])}, n_boot=500, seed=1)
    assert again.iloc[0]["ci_low"] == a["ci_low"]


def test_baseline_config_validation_and_yaml(tmp_path):
    with pytest.raises(ValueError, match="methods must be"):
        BaselineConfig(methods=("greedy", "tot"))
    with pytest.raises(ValueError, match="cot_tokens must be >= 1"):
        BaselineConfig(cot_tokens=0)
    with pytest.raises(ValueError, match="shots must be >= 1"):
        BaselineConfig(shots=0)
    cfg = BaselineConfig(methods=("majority",), n_samples=8)
    cfg.to_yaml(tmp_path / "b.yaml")
    assert BaselineConfig.from_yaml(tmp_path / "b.yaml") == cfg


def greedy_loop(model, tokenizer, text: str, max_new: int, ends) -> str:
    """Greedy decoding by full forward passes (no cache): the generated text, the stopping token included."""
    import torch

    ids = tokenizer(text).input_ids
    out: list[int] = []
    with torch.no_grad():
        for _ in range(max_new):
            t = int(model(torch.tensor([ids + out])).logits[0, -1].argmax())
            out.append(t)
            if t == tokenizer.eos_token_id or any(e in tokenizer.decode([t]) for e in ends):
                break
    return tokenizer.decode(out, skip_special_tokens=True)


def test_chain_of_thought_is_two_greedy_passes_around_the_marker(tiny_model, tokenizer, facts):
    test = facts.iloc[:3]
    cfg = BaselineConfig(methods=("cot",), cot_tokens=10, max_new_tokens=4)
    out = run_baselines(tiny_model, tokenizer, test, None, cfg)
    assert out["method"].unique().tolist() == ["CoT"] and len(out) == 3
    for row, q, answers in zip(out.itertuples(), test["question"], test["answers"]):
        first = f"Q: {q}\n{COT_INSTRUCTION}\nA: Let's think step by step."
        thought = greedy_loop(tiny_model, tokenizer, first, 10, ["\n\n"]).split("\n\n")[0]
        assert row.marker == ("Answer:" in thought)
        reasoning = thought.split("Answer:")[0].rstrip()
        assert row.reasoning == reasoning
        answer = greedy_loop(tiny_model, tokenizer, f"{first}{reasoning}\nAnswer:", 4, ["\n"]).split("\n")[0]
        assert row.prediction == answer.strip().rstrip(".").strip()
        assert row.correct == MatchConfig().matcher()(row.prediction, list(answers))
    # the same facts one at a time: nothing depends on the batch
    alone = pd.concat([cot_baseline(tiny_model, tokenizer, test.iloc[[i]], cfg, PromptConfig()) for i in range(3)])
    assert alone["prediction"].tolist() == out["prediction"].tolist()
