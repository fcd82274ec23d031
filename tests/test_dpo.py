"""DPO: the loss by hand, sequence log-probs against a plain forward pass, pairs from the model's own samples,
log 2 at the first step, a run that separates the pairs, resume, nothing to pair."""

from __future__ import annotations

import copy
import json
import math

import pandas as pd
import pytest
import torch

from conftest import FACTS
from massshift.lm.prompts import PromptConfig
from massshift.lm.sampling import stop_token_mask
from massshift.train.dpo import (
    PAIRS_FILE,
    DPOConfig,
    dpo_loss,
    make_pairs,
    read_pairs,
    sequence_logprobs,
    train_dpo,
)
from massshift.train.sft import SFTConfig, train_sft


def even(pred: str, answers: list[str]) -> bool:
    """Easy to satisfy and easy to fail, unrelated to the gold: both kinds of sample from a random model."""
    return len(pred) % 2 == 0


@pytest.fixture(scope="module")
def facts() -> pd.DataFrame:
    return pd.DataFrame([{"fact_id": str(i), **f} for i, f in enumerate(FACTS)])


@pytest.fixture(scope="module")
def sft_model(tiny_model, tokenizer, facts, tmp_path_factory):
    """The tiny model after a little SFT: its samples stop (a random model's rarely emit the terminator)."""
    out = tmp_path_factory.mktemp("sft")
    return train_sft(copy.deepcopy(tiny_model), tokenizer, facts, out, SFTConfig(steps=40, batch_size=8, lr=3e-3)).model


def plain_logprob(model, prompt: list[int], completion: list[int]) -> float:
    """log p(completion | prompt) from one unpadded forward pass over the concatenation."""
    ids = torch.tensor([prompt + completion])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0].double(), dim=-1)
    return float(sum(logp[len(prompt) - 1 + i, t] for i, t in enumerate(completion)))


def test_dpo_loss_by_hand():
    pc, pr, rc, rr = (torch.tensor([v]) for v in (-1.0, -2.0, -1.5, -1.0))
    loss, margin = dpo_loss(pc, pr, rc, rr, beta=0.5)
    # margin = 0.5 * ((-1 + 1.5) - (-2 + 1)) = 0.75; loss = -log sigmoid(0.75) = log(1 + e^-0.75)
    assert margin.item() == pytest.approx(0.75)
    assert loss.item() == pytest.approx(math.log1p(math.exp(-0.75)), rel=1e-6)
    # policy equal to the reference: log 2 whatever the log-probs
    loss0, m0 = dpo_loss(torch.tensor([-3.0, -7.0]), torch.tensor([-1.0, -0.5]), torch.tensor([-3.0, -7.0]),
                         torch.tensor([-1.0, -0.5]), beta=0.1)
    assert loss0.item() == pytest.approx(math.log(2)) and torch.all(m0 == 0)


def test_sequence_logprobs_match_a_plain_forward_pass_at_any_batch(tiny_model, tokenizer):
    prompts = [tokenizer.encode("Q: What is the capital of France?\nA:"), tokenizer.encode("Q: Who wrote Hamlet?\nA:")]
    comps = [tokenizer.encode(" Paris\n"), tokenizer.encode(" William Shakespeare\n")]
    got = sequence_logprobs(tiny_model, prompts, comps, tokenizer.pad_token_id)
    alone = [sequence_logprobs(tiny_model, [p], [c], tokenizer.pad_token_id).item() for p, c in zip(prompts, comps)]
    want = [plain_logprob(tiny_model, p, c) for p, c in zip(prompts, comps)]
    assert got.tolist() == pytest.approx(want, abs=1e-4)
    assert alone == pytest.approx(want, abs=1e-4)


def test_pairs_are_a_correct_and_an_incorrect_sample_of_one_question(sft_model, tokenizer, facts):
    cfg = DPOConfig(n_samples=8, max_new_tokens=6, pairs_per_question=2, seed=1, batch_size=3)
    pairs, table = make_pairs(sft_model, tokenizer, facts, PromptConfig(), cfg, even)
    stop = stop_token_mask(tokenizer, "\n")
    assert pairs and len(pairs) == table["n_pairs"].sum() and (table["n_pairs"] <= 2).all()
    assert table["n_samples"].tolist() == [8] * len(facts)
    prompts = {fid: tokenizer.encode(f"Q: {q}\nA:") for fid, q in zip(facts["fact_id"], facts["question"])}
    for q in pairs:
        assert list(q.prompt_ids) == prompts[q.fact_id]
        chosen = tokenizer.decode(list(q.chosen_ids), skip_special_tokens=True).split("\n")[0].strip()
        rejected = tokenizer.decode(list(q.rejected_ids), skip_special_tokens=True).split("\n")[0].strip()
        assert even(chosen, []) and not even(rejected, [])
        assert stop[q.chosen_ids[-1]]
        assert q.ref_chosen == pytest.approx(plain_logprob(sft_model, list(q.prompt_ids), list(q.chosen_ids)), abs=1e-4)
        assert q.ref_rejected == pytest.approx(plain_logprob(sft_model, list(q.prompt_ids), list(q.rejected_ids)),
                                               abs=1e-4)
    again, _ = make_pairs(sft_model, tokenizer, facts, PromptConfig(), cfg, even)
    assert again == pairs  # seeded: the same samples, the same pairs


def test_dpo_starts_at_log_2_and_separates_its_pairs(sft_model, tokenizer, facts, tmp_path):
    cfg = DPOConfig(n_samples=8, max_new_tokens=6, pairs_per_question=2, steps=30, batch_size=4, lr=3e-3, beta=0.5)
    res = train_dpo(copy.deepcopy(sft_model), tokenizer, facts, tmp_path, cfg, matcher=even)
    log = res.log.dropna(subset=["loss"])
    assert log["loss"].iloc[0] == pytest.approx(math.log(2), abs=1e-5)
    pairs = read_pairs(tmp_path / PAIRS_FILE)
    pad = tokenizer.pad_token_id
    with torch.no_grad():
        chosen = sequence_logprobs(res.model, [q.prompt_ids for q in pairs], [q.chosen_ids for q in pairs], pad)
        rejected = sequence_logprobs(res.model, [q.prompt_ids for q in pairs], [q.rejected_ids for q in pairs], pad)
        loss, margin = dpo_loss(chosen, rejected, torch.tensor([q.ref_chosen for q in pairs]),
                                torch.tensor([q.ref_rejected for q in pairs]), cfg.beta)
    assert loss.item() < 0.5 * math.log(2)
    assert (margin > 0).float().mean().item() >= 0.9
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["trainer"] == "dpo" and summary["pairs"] == len(pairs) and summary["steps"] == 30
    assert summary["loss_last"] == pytest.approx(log["loss"].iloc[-1])
    assert (tmp_path / "final" / "model.safetensors").exists()


def test_dpo_resume_gives_the_uninterrupted_parameters(sft_model, tokenizer, facts, tmp_path):
    cfg = dict(n_samples=4, max_new_tokens=4, batch_size=2, lr=1e-2, save_every=2)
    straight = train_dpo(copy.deepcopy(sft_model), tokenizer, facts, tmp_path / "a", DPOConfig(steps=4, **cfg),
                         matcher=even)
    train_dpo(copy.deepcopy(sft_model), tokenizer, facts, tmp_path / "b", DPOConfig(steps=2, **cfg), matcher=even)
    resumed = train_dpo(copy.deepcopy(sft_model), tokenizer, facts, tmp_path / "b", DPOConfig(steps=4, **cfg),
                        matcher=even, resume=True)
    a, b = dict(straight.model.named_parameters()), dict(resumed.model.named_parameters())
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.log["loss"].tolist() == straight.log["loss"].tolist()


def test_dpo_with_no_pair_keeps_the_model(tiny_model, tokenizer, facts, tmp_path):
    res = train_dpo(copy.deepcopy(tiny_model), tokenizer, facts.iloc[:2], tmp_path, DPOConfig(n_samples=2, steps=3,
                    max_new_tokens=2), matcher=lambda p, a: False)
    assert json.loads((tmp_path / "summary.json").read_text())["pairs"] == 0
    assert all(torch.equal(a, b) for a, b in zip(res.model.parameters(), tiny_model.parameters()))


@pytest.mark.parametrize(("kwargs", "message"), [({"beta": 0}, "beta must be > 0"),
                                                 ({"pairs_per_question": 0}, "pairs_per_question"),
                                                 ({"n_samples": 0}, "n_samples")])
def test_dpo_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DPOConfig(**kwargs)
