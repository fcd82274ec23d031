"""SFT lowers its loss and learns the facts; RFT keeps only correct, finished, distinct samples."""

from __future__ import annotations

import copy
import json

import pandas as pd
import pytest
import torch

from conftest import FACTS
from massshift.data.matching import MatchConfig
from massshift.lm.prompts import PromptConfig
from massshift.lm.sampling import stop_token_mask
from massshift.train.rft import RFTConfig, collect_correct, train_rft
from massshift.train.sft import SFTConfig, gold_examples, sft_loss, train_sft


@pytest.fixture(scope="module")
def facts() -> pd.DataFrame:
    return pd.DataFrame([{"fact_id": str(i), **f} for i, f in enumerate(FACTS)])


@pytest.fixture(scope="module")
def sft_run(tiny_model, tokenizer, facts, tmp_path_factory):
    out = tmp_path_factory.mktemp("sft")
    model = copy.deepcopy(tiny_model)
    res = train_sft(model, tokenizer, facts, out, SFTConfig(steps=80, batch_size=8, lr=3e-3, eval_every=40),
                    eval_facts=facts)
    return res


def test_gold_examples_are_the_first_alias_with_terminator(tokenizer, facts):
    ex = gold_examples(tokenizer, facts, PromptConfig())
    assert [e.fact_id for e in ex] == list(facts["fact_id"])
    assert tokenizer.decode(list(ex[0].target_ids)) == " Paris\n"
    assert tokenizer.decode(list(ex[4].prompt_ids)) == "Q: Who wrote Hamlet?\nA:"


def test_sft_lowers_the_loss_and_learns_the_facts(tiny_model, tokenizer, facts, sft_run):
    ex = gold_examples(tokenizer, facts, PromptConfig())
    with torch.no_grad():
        before, n = sft_loss(tiny_model, ex, tokenizer.pad_token_id)
        after, _ = sft_loss(sft_run.model, ex, tokenizer.pad_token_id)
    assert n == sum(len(e.target_ids) for e in ex)
    assert before.item() > 5.0  # about log(300) for an untrained model
    assert after.item() < 0.5 * before.item()
    log = sft_run.log.dropna(subset=["loss"])
    assert log["step"].tolist() == list(range(1, 81))
    assert log["loss"].iloc[-5:].mean() < log["loss"].iloc[:5].mean()
    evals = sft_run.log["eval_accuracy"].dropna().tolist()
    assert len(evals) == 3 and evals[0] == 0.0 and evals[-1] >= 0.5
    summary = json.loads((sft_run.out_dir / "summary.json").read_text())
    assert summary["trainer"] == "sft" and summary["examples"] == 8 and summary["steps"] == 80
    assert (sft_run.final_path / "model.safetensors").exists()
    assert (sft_run.out_dir / "figures" / "training.png").exists()


def test_sft_steps_from_epochs():
    assert SFTConfig(epochs=3, batch_size=16).total_steps(40) == 9
    assert SFTConfig(epochs=3, steps=5).total_steps(40) == 5


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"epochs": 0}, "epochs must be >= 1"), ({"lr": 0}, "lr must be > 0"), ({"match_mode": "x"}, "match_mode"),
])
def test_sft_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SFTConfig(**kwargs)


def test_rft_config_validation_and_sft_part(tmp_path):
    with pytest.raises(ValueError, match="n_samples must be >= 1"):
        RFTConfig(n_samples=0)
    with pytest.raises(ValueError, match="RFTConfig: batch_size"):
        RFTConfig(batch_size=0)
    cfg = RFTConfig(n_samples=4, lr=1e-3, steps=3)
    assert cfg.sft_config() == SFTConfig(lr=1e-3, steps=3)
    cfg.to_yaml(tmp_path / "rft.yaml")
    assert RFTConfig.from_yaml(tmp_path / "rft.yaml") == cfg


def test_rft_keeps_only_correct_finished_distinct_samples(tokenizer, facts, sft_run):
    def even(pred: str, answers: list[str]) -> bool:  # easy to satisfy, unrelated to the gold
        return len(pred) % 2 == 0

    cfg = RFTConfig(n_samples=8, max_new_tokens=8, seed=3)
    examples, table = collect_correct(sft_run.model, tokenizer, facts, PromptConfig(), cfg, even)
    stop = stop_token_mask(tokenizer, "\n")
    assert table["n_samples"].tolist() == [8] * len(facts)
    assert examples and len(examples) == table["n_kept"].sum()
    assert (table["n_kept"] <= table["n_correct"]).all()
    for e in examples:
        text = tokenizer.decode(list(e.target_ids), skip_special_tokens=True)
        assert even(text.split("\n")[0].strip(), [])
        assert stop[e.target_ids[-1]]
    keys = [(e.fact_id, e.target_ids) for e in examples]
    assert len(keys) == len(set(keys))
    # with the gold matcher the kept answers are right
    gold, table_gold = collect_correct(sft_run.model, tokenizer, facts, PromptConfig(), cfg, MatchConfig().matcher())
    assert gold and (table_gold["n_correct"] > 0).sum() >= 2
    answers = dict(zip(facts["fact_id"], facts["answers"]))
    for e in gold:
        text = tokenizer.decode(list(e.target_ids), skip_special_tokens=True).split("\n")[0].strip()
        assert MatchConfig().matcher()(text, answers[e.fact_id])


def test_rft_run_trains_on_kept_samples(tokenizer, facts, sft_run, tmp_path):
    cfg = RFTConfig(n_samples=8, max_new_tokens=8, steps=5, batch_size=4, lr=1e-3)
    res = train_rft(copy.deepcopy(sft_run.model), tokenizer, facts, tmp_path, cfg, eval_facts=facts)
    table = pd.read_parquet(tmp_path / "rft_samples.parquet")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["questions"] == len(facts)
    assert summary["questions_with_correct"] == int((table["n_correct"] > 0).sum()) > 0
    assert summary["examples_kept"] == int(table["n_kept"].sum())
    assert summary["trainer"] == "rft" and summary["steps"] == 5
    assert res.log.dropna(subset=["loss"])["step"].tolist() == [1, 2, 3, 4, 5]


def test_rft_with_nothing_correct_keeps_the_model(tiny_model, tokenizer, facts, tmp_path):
    cfg = RFTConfig(n_samples=2, max_new_tokens=2, steps=3)
    res = train_rft(copy.deepcopy(tiny_model), tokenizer, facts.iloc[:2], tmp_path, cfg,
                    matcher=lambda p, a: False, eval_facts=facts.iloc[:2])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["examples_kept"] == 0
    assert summary["loss_first"] is None and summary["loss_last"] is None  # no step: no loss, evals or not
    assert summary["eval_accuracy_start"] == summary["eval_accuracy_end"] == 0.0
    assert "loss" not in res.log
    assert all(torch.equal(a, b) for a, b in zip(res.model.parameters(), tiny_model.parameters()))
