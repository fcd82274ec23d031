"""GRPO trainer: advantages, loss gradients, teacher-forced log-probs, a learning run, resume, config."""

from __future__ import annotations

import copy
import json

import pandas as pd
import pytest
import torch
import yaml

from conftest import FACTS
from massshift.train.common import completion_logprobs, truncation_warning
from massshift.train.grpo import (
    GRPOConfig,
    Rollout,
    group_advantages,
    policy_loss,
    rewards,
    step,
    train_grpo,
)
from massshift.train.sft import SFTConfig, train_sft

CAPITALS = [("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid")]


def _facts(n: int = 4) -> pd.DataFrame:
    return pd.DataFrame([{"fact_id": str(i), **f} for i, f in enumerate(FACTS[:n])])


def _length_parity(text: str, answers: list[str]) -> float:
    """A reward with in-group variance on an untrained model."""
    return float(len(text) % 2)


def _params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


# --- advantages --------------------------------------------------------------------------------

def test_group_advantages_hand_worked():
    r = torch.tensor([[1.0, 0, 0, 0], [1, 1, 1, 1], [0, 1, 0, 1]])
    # row 0: mean 0.25, unbiased std 0.5; row 2: mean 0.5, std sqrt(1/3)
    s2 = (1 / 3) ** 0.5
    expected = torch.tensor([[0.75, -0.25, -0.25, -0.25], [0, 0, 0, 0], [-0.5, 0.5, -0.5, 0.5]])
    scale = torch.tensor([[0.5 + 1e-4], [1e-4], [s2 + 1e-4]])
    assert torch.allclose(group_advantages(r, "group"), expected / scale, atol=1e-6)
    assert torch.allclose(group_advantages(r, "none"), expected, atol=1e-7)
    assert torch.equal(group_advantages(torch.full((2, 8), 0.7), "group"), torch.zeros(2, 8))
    with pytest.raises(ValueError, match="scale_rewards"):
        group_advantages(r, "batch")


def test_rewards_matcher_and_reward_fn():
    ro = Rollout(fact_ids=["a", "b"], answers=[["Paris"], ["Rome"]], prompt_ids=[[1], [2]],
                 completion_ids=[[5], [6], [7], [8]], texts=["paris", "Berlin", "the Rome.", "x"],
                 greedy_texts=["", ""], finished=[True] * 4, group_size=2)
    from massshift.data.matching import MatchConfig

    assert rewards(ro, matcher=MatchConfig().matcher()).tolist() == [[1.0, 0.0], [1.0, 0.0]]
    assert rewards(ro, reward_fn=lambda t, a: float(len(t))).tolist() == [[5.0, 6.0], [9.0, 1.0]]
    with pytest.raises(ValueError, match="exactly one"):
        rewards(ro)


def test_truncated_completions_earn_zero_only_when_asked():
    """Hand-worked: the same texts, two of them cut at the token cap; 'zero' pays those nothing."""
    ro = Rollout(fact_ids=["a", "b"], answers=[["Paris"], ["Rome"]], prompt_ids=[[1], [2]],
                 completion_ids=[[5], [6], [7], [8]], texts=["Paris", "Paris Paris Paris", "Rome", "Rome Rome"],
                 greedy_texts=["", ""], finished=[True, False, False, True], group_size=2)
    from massshift.data.matching import MatchConfig

    matcher = MatchConfig(mode="contains").matcher()
    assert rewards(ro, matcher=matcher).tolist() == [[1.0, 1.0], [1.0, 1.0]]
    assert rewards(ro, matcher=matcher, truncated_reward="zero").tolist() == [[1.0, 0.0], [0.0, 1.0]]
    # every reward equal under 'text' (no signal); 'zero' gives both groups an advantage
    assert group_advantages(rewards(ro, matcher=matcher)).abs().sum() == 0
    assert (group_advantages(rewards(ro, matcher=matcher, truncated_reward="zero")).abs() > 0.5).all()
    with pytest.raises(ValueError, match="truncated_reward"):
        rewards(ro, matcher=matcher, truncated_reward="mask")
    with pytest.raises(ValueError, match="truncated_reward must be 'text' or 'zero'"):
        GRPOConfig(truncated_reward="mask")


def test_truncation_warning_reads_the_last_five_steps():
    frame = pd.DataFrame({"step": range(8), "truncated_share": [0.0, 0.0, 0.0, 0.9, 0.9, 1.0, 0.8, 0.7]})
    msg = truncation_warning(frame, GRPOConfig(max_new_tokens=12))
    assert msg is not None and msg.startswith("86% of the completions of the last 5 steps hit max_new_tokens=12")
    assert truncation_warning(frame, GRPOConfig(truncated_reward="zero")) is None
    frame["truncated_share"] = [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.5]  # mean 0.5 of the last five: no warning
    assert truncation_warning(frame, GRPOConfig()) is None
    assert truncation_warning(pd.DataFrame({"step": [0]}), GRPOConfig()) is None


# --- loss -------------------------------------------------------------------------------------

def test_policy_loss_value_and_gradient_sign():
    logits = torch.randn(2, 3, 7, generator=torch.Generator().manual_seed(0), requires_grad=True)
    tokens = torch.tensor([[1, 2, 3], [4, 5, 6]])
    logp = torch.log_softmax(logits, -1).gather(-1, tokens[..., None])[..., 0]
    mask = torch.tensor([[1.0, 1, 1], [1, 1, 0]])
    adv = torch.tensor([2.0, -1.0])
    parts = policy_loss(logp, logp.detach(), adv, mask, epsilon=0.2, n_tokens=5)
    # ratio 1 everywhere: loss = -(3 * 2 + 2 * -1) / 5
    assert parts.loss.item() == pytest.approx(-0.8, abs=1e-6)
    assert parts.clipped == 0 and parts.kl_old == pytest.approx(0.0, abs=1e-7)
    parts.loss.backward()
    g = logits.grad
    # gradient descent raises the chosen logit of a positive-advantage completion, lowers a negative one
    assert g[0, 0, 1] < 0 and g[0, 2, 3] < 0
    assert g[1, 0, 4] > 0 and g[1, 1, 5] > 0
    assert torch.all(g[1, 2] == 0)  # masked token


def test_policy_loss_clipping_and_kl():
    logp = torch.tensor([[0.0, -1.0]], requires_grad=True)
    old = torch.tensor([[-1.0, -1.0]])  # ratio e (clipped) and 1
    parts = policy_loss(logp, old, torch.tensor([1.0]), torch.ones(1, 2), epsilon=0.2, n_tokens=2)
    assert parts.clipped == 1.0
    parts.loss.backward()
    assert logp.grad[0, 0] == 0 and logp.grad[0, 1] == pytest.approx(-0.5)
    ref = torch.tensor([[0.0, 0.0]])
    parts = policy_loss(logp.detach(), logp.detach(), torch.tensor([0.0]), torch.ones(1, 2), 0.2, 2,
                        beta=0.5, ref_logp=ref)
    k3 = (torch.exp(torch.tensor(1.0)) - 1 - 1).item()  # d = ref - logp = 1 on the second token
    assert parts.kl_ref == pytest.approx(k3, rel=1e-6)
    assert parts.loss.item() == pytest.approx(0.5 * k3 / 2, rel=1e-6)


def test_completion_logprobs_match_plain_forward(tiny_model):
    prompts = [[5, 6, 7], [8], [9, 10]]
    comps = [[11, 12], [13, 14, 15, 16], [17]]
    logp, mask, ent = completion_logprobs(tiny_model, prompts, comps, pad_id=0, with_entropy=True)
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]
    for i, (p, c) in enumerate(zip(prompts, comps)):
        with torch.no_grad():
            lg = tiny_model(torch.tensor([p + c])).logits[0].float()
        ref = torch.log_softmax(lg, -1)[len(p) - 1: len(p) + len(c) - 1].gather(-1, torch.tensor(c)[:, None])[:, 0]
        assert torch.allclose(logp[i, : len(c)], ref, atol=1e-5)
        assert torch.all(ent[i, : len(c)] > 0) and torch.all(ent[i, len(c):] == 0)
    hot, _, _ = completion_logprobs(tiny_model, prompts, comps, pad_id=0, temperature=0.5)
    assert not torch.allclose(hot, logp)


def test_positive_advantage_completion_becomes_likelier(tiny_model):
    model = copy.deepcopy(tiny_model)
    prompt, comp = [[5, 6, 7]], [[20, 21, 2]]
    before, mask, _ = completion_logprobs(model, prompt, comp, 0)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    parts = policy_loss(before, before.detach(), torch.tensor([1.0]), mask, 0.2, 3)
    parts.loss.backward()
    opt.step()
    after, _, _ = completion_logprobs(model, prompt, comp, 0)
    assert after.sum().item() > before.sum().item() + 1e-3


# --- steps and runs ------------------------------------------------------------------------------

def _step_once(model, tokenizer, facts, config, optimizer=None):
    from massshift.lm.prompts import PromptConfig
    from massshift.train.common import make_optimizer, prompt_ids_for

    opt = optimizer or make_optimizer(model, config.lr, 0.0)
    prompts = prompt_ids_for(tokenizer, list(facts["question"]), PromptConfig())
    return step(model, opt, tokenizer, facts, prompts, config, 0, reward_fn=_length_parity)


def test_one_step_changes_parameters_and_logs(tiny_model, tokenizer):
    model = copy.deepcopy(tiny_model)
    before = _params(model)
    cfg = GRPOConfig(steps=1, batch_size=2, num_generations=4, lr=1e-2, max_new_tokens=4)
    row = _step_once(model, tokenizer, _facts(2), cfg)
    changed = [k for k, v in model.named_parameters() if not torch.equal(v, before[k])]
    assert len(changed) == len(before)
    assert 0 < row["reward_mean"] < 1 and row["zero_var_share"] < 1
    assert 1 <= row["completion_len"] <= 4 and 0 <= row["truncated_share"] <= 1
    assert row["entropy"] > 5.0  # near log(300) = 5.70 for an untrained model
    assert row["grad_norm"] > 0 and row["kl"] is None and row["kl_old"] is None


def test_a_step_of_truncated_completions_earns_nothing_under_zero(tiny_model, tokenizer):
    """max_new_tokens=2 with an untrained model: most completions are cut (no stop token). With a reward
    of 1 for every text, the step's mean reward is 1 under 'text' and exactly the finished share under 'zero'."""
    from massshift.lm.prompts import PromptConfig
    from massshift.train.common import prompt_ids_for

    facts = _facts(2)
    prompts = prompt_ids_for(tokenizer, list(facts["question"]), PromptConfig())
    for mode in ("text", "zero"):
        model = copy.deepcopy(tiny_model)
        cfg = GRPOConfig(steps=1, batch_size=2, num_generations=4, lr=1e-2, max_new_tokens=2, truncated_reward=mode)
        row = step(model, torch.optim.SGD(model.parameters(), lr=0.0), tokenizer, facts, prompts, cfg, 0,
                   reward_fn=lambda text, answers: 1.0)
        assert row["truncated_share"] > 0.5
        expected = 1.0 if mode == "text" else 1.0 - row["truncated_share"]
        assert row["reward_mean"] == pytest.approx(expected, abs=1e-6)


def test_micro_batches_give_the_same_gradient(tiny_model, tokenizer):
    grads, rows = [], []
    for mb in (0, 3):
        model = copy.deepcopy(tiny_model)
        cfg = GRPOConfig(steps=1, batch_size=2, num_generations=4, lr=1e-2, max_new_tokens=4, micro_batch_size=mb)
        rows.append(_step_once(model, tokenizer, _facts(2), cfg, torch.optim.SGD(model.parameters(), lr=0.0)))
        grads.append({k: v.grad.clone() for k, v in model.named_parameters()})
    assert rows[0]["grad_norm"] == pytest.approx(rows[1]["grad_norm"], rel=1e-5)
    assert rows[0]["loss"] == pytest.approx(rows[1]["loss"], abs=1e-6)
    for k in grads[0]:
        assert torch.allclose(grads[0][k], grads[1][k], atol=1e-7), k


def test_reward_rises_on_a_memorisation_task(tiny_model, tokenizer, tmp_path):
    """SFT on every (country, capital) pairing, the right one twice, leaves the right capital in the
    samples but not dominant; GRPO must move mass onto it (the paper's tail -> greedy story)."""
    model = copy.deepcopy(tiny_model)
    qs = [f"What is the capital of {c}?" for c, _ in CAPITALS]
    mixed = pd.DataFrame([{"fact_id": f"{i}-{j}-{k}", "question": q, "answers": [a]}
                          for i, q in enumerate(qs) for j, (_, a) in enumerate(CAPITALS) for k in range(1 + (i == j))])
    train_sft(model, tokenizer, mixed, tmp_path / "sft", SFTConfig(steps=60, batch_size=20, lr=3e-3))
    facts = pd.DataFrame([{"fact_id": str(i), "question": q, "answers": [a]}
                          for i, (q, (_, a)) in enumerate(zip(qs, CAPITALS))])
    cfg = GRPOConfig(steps=40, batch_size=4, num_generations=8, lr=3e-3, max_new_tokens=8, save_every=0,
                     eval_every=20)
    res = train_grpo(model, tokenizer, facts, tmp_path / "grpo", cfg, eval_facts=facts)
    log = res.log.dropna(subset=["reward_mean"])
    first, last = log["reward_mean"].head(5).mean(), log["reward_mean"].tail(5).mean()
    assert first < 0.4
    assert last > first + 0.25, (first, last)
    evals = res.log["eval_accuracy"].dropna().tolist()
    assert len(evals) == 3 and evals[-1] >= evals[0]
    summary = json.loads((tmp_path / "grpo" / "summary.json").read_text())
    assert summary["reward_last5"] == pytest.approx(last)


def test_resume_gives_the_uninterrupted_parameters(tiny_model, tokenizer, tmp_path):
    facts = _facts(4)
    cfg = dict(batch_size=2, num_generations=4, lr=1e-2, max_new_tokens=4, save_every=2, eval_every=0)
    straight = train_grpo(copy.deepcopy(tiny_model), tokenizer, facts, tmp_path / "a", GRPOConfig(steps=4, **cfg),
                          reward_fn=_length_parity)
    train_grpo(copy.deepcopy(tiny_model), tokenizer, facts, tmp_path / "b", GRPOConfig(steps=2, **cfg),
               reward_fn=_length_parity)
    resumed = train_grpo(copy.deepcopy(tiny_model), tokenizer, facts, tmp_path / "b", GRPOConfig(steps=4, **cfg),
                         reward_fn=_length_parity, resume=True)
    a, b = dict(straight.model.named_parameters()), dict(resumed.model.named_parameters())
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["model.embed_tokens.weight"], tiny_model.model.embed_tokens.weight)
    assert resumed.log["step"].tolist() == [1, 2, 3, 4]
    assert resumed.log["reward_mean"].tolist() == straight.log["reward_mean"].tolist()
    assert json.loads((tmp_path / "b" / "summary.json").read_text())["resumed_from"] == 2
    state = torch.load(tmp_path / "b" / "checkpoints" / "step-4" / "trainer_state.pt", weights_only=True)
    assert state["step"] == 4


def test_run_directory_and_lora_with_kl(tiny_model, tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM

    cfg = GRPOConfig(steps=2, batch_size=2, num_generations=4, lr=1e-2, max_new_tokens=4, save_every=1,
                     lora_r=4, beta=0.1, num_iterations=2)
    res = train_grpo(copy.deepcopy(tiny_model), tokenizer, _facts(4), tmp_path, cfg, reward_fn=_length_parity)
    for name in ("config.yaml", "env.json", "train_log.jsonl", "summary.json", "figures/training.png",
                 "checkpoints/step-1/adapter_model.safetensors", "checkpoints/step-2/trainer_state.pt",
                 "final/model.safetensors", "final/adapter/adapter_config.json"):
        assert (tmp_path / name).exists(), name
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["grpo"]["lora_r"] == 4
    log = res.log
    assert log["kl"].notna().all() and (log["kl"] >= 0).all()
    assert log["kl"].iloc[0] == pytest.approx(0.0, abs=1e-6)  # the adapter starts at zero
    assert log["kl_old"].notna().all() and (log["kl_old"] > 0).all()
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "final")
    assert not any("lora" in k for k in merged.state_dict())
    ids = torch.tensor([[5, 6, 7]])
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, res.model(ids).logits, atol=1e-5)
        assert not torch.allclose(merged(ids).logits, tiny_model(ids).logits, atol=1e-5)


# --- config -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("kwargs", "message"), [
    ({"num_generations": 1}, "num_generations must be >= 2"),
    ({"batch_size": 0}, "batch_size"),
    ({"scale_rewards": "batch"}, "'group' or 'none'"),
    ({"temperature": 0}, "temperature must be > 0"),
    ({"epsilon": 1.5}, "epsilon must be in"),
    ({"match_mode": "fuzzy"}, "match_mode"),
    ({"threads": 0}, "threads"),
])
def test_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GRPOConfig(**kwargs)


def test_config_yaml_round_trip(tmp_path):
    cfg = GRPOConfig(steps=7, lr=3e-4, scale_rewards="none", threads=1)
    cfg.to_yaml(tmp_path / "c.yaml")
    assert GRPOConfig.from_yaml(tmp_path / "c.yaml") == cfg
    (tmp_path / "bad.yaml").write_text("steps: 3\nlearning_rate: 1e-3\n")
    with pytest.raises(ValueError, match="unknown GRPOConfig setting.*learning_rate"):
        GRPOConfig.from_yaml(tmp_path / "bad.yaml")
