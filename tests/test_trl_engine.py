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
