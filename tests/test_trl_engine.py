"""TRL engine: two GRPOTrainer steps on the tiny model on CPU, with massshift's reward and prompts."""

from __future__ import annotations

import json

import pandas as pd
import trl  # noqa: F401  (make test installs the trl extra; a missing trl must fail, never skip)
import yaml

from conftest import FACTS
from massshift.lm.prompts import PromptConfig
from massshift.train.grpo import GRPOConfig


def test_reward_function_cuts_at_the_terminator_and_matches():
    from massshift.data.matching import MatchConfig
    from massshift.train.trl_engine import massshift_reward

    fn = massshift_reward("\n", MatchConfig().matcher())
    assert fn([" Paris\nQ: x", " the rome.", "Berlin"], [["Paris"], ["Rome"], ["Bonn"]], trainer_state=None) == [
        1.0, 1.0, 0.0]
    custom = massshift_reward("\n", reward_fn=lambda p, a: float(len(p)))
    assert custom([" abc\nzz"], [["x"]]) == [3.0]


def test_trl_arguments_match_the_builtin_config(tmp_path):
    from massshift.train.trl_engine import trl_arguments

    cfg = GRPOConfig(steps=5, batch_size=3, num_generations=4, num_iterations=2, lr=2e-5, beta=0.04,
                     scale_rewards="none", max_new_tokens=12)
    args = trl_arguments(cfg, tmp_path, use_cpu=True)
    assert args["max_steps"] == 10 and args["per_device_train_batch_size"] == 12
    assert (args["num_generations"], args["max_completion_length"], args["loss_type"]) == (4, 12, "dapo")
    assert (args["beta"], args["scale_rewards"], args["lr_scheduler_type"]) == (0.04, "none", "constant")


def test_two_trl_steps_on_cpu(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from massshift.train.trl_engine import train_grpo_trl

    facts = pd.DataFrame([{"fact_id": str(i), **f} for i, f in enumerate(FACTS[:4])])
    seen: list[list[str]] = []

    def reward(pred: str, answers: list[str]) -> float:
        seen.append(answers)
        return float(len(pred) % 2)

    cfg = GRPOConfig(steps=2, batch_size=2, num_generations=4, lr=1e-2, max_new_tokens=4, save_every=0, threads=1)
    res = train_grpo_trl(tiny_model_dir, facts, tmp_path, cfg, PromptConfig(), reward_fn=reward, use_cpu=True)
    assert len(seen) == 2 * 2 * 4 and all(a in list(facts["answers"].map(list)) for a in seen)
    assert res.log["step"].tolist() == [1, 2]
    assert res.log["reward_mean"].between(0, 1).all() and (res.log["completion_len"] <= 4).all()
    final = AutoModelForCausalLM.from_pretrained(res.final_path)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert final.generation_config.eos_token_id == base.generation_config.eos_token_id
    assert any((a - b).abs().max() > 0 for a, b in zip(final.parameters(), base.parameters()))
    cfg_yaml = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert cfg_yaml["engine"] == "trl" and cfg_yaml["trl"]["num_generations"] == 4
    assert json.loads((tmp_path / "summary.json").read_text())["optimizer_steps"] == 2
    assert (tmp_path / "train_log.jsonl").exists() and (tmp_path / "figures" / "training.png").exists()


class _Captured(Exception):
    """Raised by the fake trainer once it has what the test needs."""


def _capture_trainer(monkeypatch):
    """Replace trl.GRPOTrainer with a fake that records its arguments and stops the run."""
    seen: dict = {}

    class FakeTrainer:
        def __init__(self, **kwargs):
            seen.update(kwargs)
            raise _Captured

    monkeypatch.setattr(trl, "GRPOTrainer", FakeTrainer)
    return seen


def test_trl_optimises_the_builtin_reward_with_anti_hedging(monkeypatch, tiny_model_dir, tmp_path, facts_frame):
    import pytest

    from massshift.train.grpo import build_reward

    seen = _capture_trainer(monkeypatch)
    cfg = GRPOConfig(steps=1, batch_size=2, num_generations=2, match_mode="contains", save_every=0)
    from massshift.train.trl_engine import train_grpo_trl

    with pytest.raises(_Captured):
        train_grpo_trl(tiny_model_dir, facts_frame, tmp_path, cfg, PromptConfig(), use_cpu=True)
    trl_reward = seen["reward_funcs"]
    builtin = build_reward(facts_frame, cfg, "\n")
    texts = [" Paris", " Paris or Berlin", " Berlin", " it is Paris, I think\nQ: Rome"]
    golds = [["Paris", "Paris, France"]] * len(texts)
    assert trl_reward(texts, golds) == [1.0, 0.0, 0.0, 1.0]  # naming another capital earns nothing
    assert trl_reward(texts, golds) == [builtin(t.split("\n")[0].strip(), g) for t, g in zip(texts, golds)]


def test_trl_loads_every_spec_through_load_model(monkeypatch, tiny_model_dir, tmp_path, facts_frame):
    """A state-dict file spec (config.json beside it), which from_pretrained cannot read, reaches TRL as a model."""
    import pytest
    import torch

    seen = _capture_trainer(monkeypatch)
    from massshift.train.trl_engine import train_grpo_trl

    spec = tiny_model_dir / "model.safetensors"
    with pytest.raises(_Captured):
        train_grpo_trl(spec, facts_frame, tmp_path, GRPOConfig(steps=1, batch_size=2, num_generations=2,
                                                               save_every=0), use_cpu=True)
    assert isinstance(seen["model"], torch.nn.Module)
    assert seen["processing_class"].pad_token is not None


def test_trl_eval_facts_and_resume(tiny_model_dir, tmp_path):
    from massshift.train.trl_engine import train_grpo_trl

    facts = pd.DataFrame([{"fact_id": str(i), **f} for i, f in enumerate(FACTS[:4])])
    cfg = GRPOConfig(steps=2, batch_size=2, num_generations=2, lr=1e-2, max_new_tokens=4, save_every=1, threads=1)
    res = train_grpo_trl(tiny_model_dir, facts, tmp_path, cfg, reward_fn=lambda p, a: float(len(p) % 2),
                         use_cpu=True, eval_facts=facts)
    evals = res.log.dropna(subset=["eval_accuracy"])
    assert evals["step"].tolist() == [0, 2] and evals["eval_accuracy"].between(0, 1).all()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["eval_accuracy_start"] is not None and summary["eval_accuracy_end"] is not None
    more = GRPOConfig(**{**cfg.to_dict(), "steps": 3})
    resumed = train_grpo_trl(tiny_model_dir, facts, tmp_path, more, reward_fn=lambda p, a: float(len(p) % 2),
                             use_cpu=True, resume=True)
    assert json.loads((tmp_path / "summary.json").read_text())["resumed_from"] == 2
    assert resumed.log.dropna(subset=["reward_mean"])["step"].tolist() == [1, 2, 3]
