"""`massshift train rl|sft|rft|dpo` and `massshift baselines` on the tiny model, and their config handling."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from massshift.cli import app

runner = CliRunner()


def test_train_rl_writes_a_run_dir_and_honours_settings(tmp_path, tiny_model_dir, facts_file):
    cfg = tmp_path / "grpo.yaml"
    cfg.write_text(yaml.safe_dump({"steps": 5, "batch_size": 2, "lr": 1e-3}))
    out = tmp_path / "rl"
    res = runner.invoke(app, ["train", "rl", str(tiny_model_dir), "--facts", str(facts_file), "--out", str(out),
                              "--config", str(cfg), "--steps", "3", "--set", "num_generations=4",
                              "--set", "max_new_tokens=4", "--save-every", "0", "--threads", "1", "--no-progress"])
    assert res.exit_code == 0, res.output
    written = yaml.safe_load((out / "config.yaml").read_text())
    flat = written.get("grpo", written)
    assert flat["steps"] == 3 and flat["batch_size"] == 2 and flat["num_generations"] == 4  # option beats YAML
    log = pd.read_json(out / "train_log.jsonl", lines=True)
    assert len(log) == 3
    assert (out / "final" / "config.json").exists()


def test_train_sft_and_rft(tmp_path, tiny_model_dir, facts_file):
    res = runner.invoke(app, ["train", "sft", str(tiny_model_dir), "--facts", str(facts_file),
                              "--out", str(tmp_path / "sft"), "--steps", "4", "--lr", "1e-3", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "sft" / "final" / "config.json").exists()
    res = runner.invoke(app, ["train", "rft", str(tiny_model_dir), "--facts", str(facts_file),
                              "--out", str(tmp_path / "rft"), "--samples", "2", "--steps", "2", "--no-progress",
                              "--set", "max_new_tokens=4"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "rft" / "final" / "config.json").exists()


def test_train_dpo_writes_its_settings_pairs_and_checkpoints(tmp_path, tiny_model_dir, facts_file):
    out = tmp_path / "dpo"
    res = runner.invoke(app, ["train", "dpo", str(tiny_model_dir), "--facts", str(facts_file), "--out", str(out),
                              "--samples", "3", "--beta", "0.3", "--pairs-per-question", "2", "--steps", "2",
                              "--eval-facts", str(facts_file), "--set", "max_new_tokens=4", "--no-progress"])
    assert res.exit_code == 0, res.output
    written = yaml.safe_load((out / "config.yaml").read_text())["dpo"]
    assert written["beta"] == 0.3 and written["pairs_per_question"] == 2 and written["n_samples"] == 3
    summary = yaml.safe_load((out / "summary.json").read_text())
    assert summary["trainer"] == "dpo" and summary["questions"] == len(pd.read_json(facts_file, lines=True))
    assert len(pd.read_parquet(out / "dpo_pairs.parquet")) == summary["pairs"]
    assert (out / "base.ckpt").exists() and (out / "dpo.ckpt").exists()


@pytest.mark.parametrize("extra,message", [
    (["--set", "num_generations=1"], "num_generations must be >= 2"),
    (["--set", "bogus=1"], "unknown GRPOConfig setting"),
    (["--set", "nonsense"], "field=value"),
    (["--engine", "jax"], "--engine"),
])
def test_train_rl_config_errors(tmp_path, tiny_model_dir, facts_file, extra, message):
    res = runner.invoke(app, ["train", "rl", str(tiny_model_dir), "--facts", str(facts_file),
                              "--out", str(tmp_path / "x"), "--steps", "1", *extra])
    assert res.exit_code == 2
    assert message in res.output


def test_baselines(tmp_path, tiny_model_dir, facts_file):
    res = runner.invoke(app, ["baselines", str(tiny_model_dir), "--facts", str(facts_file), "--out", str(tmp_path / "b"),
                              "--samples", "3", "--set", "max_new_tokens=4", "--set", "methods=[greedy, majority]"])
    assert res.exit_code == 0, res.output
    table = pd.read_csv(tmp_path / "b" / "accuracy.csv")
    assert list(table["method"]) == ["greedy", "majority@3"]
    assert (table["n"] == 8).all()
    res = runner.invoke(app, ["baselines", str(tiny_model_dir), "--facts", str(facts_file), "--out", str(tmp_path / "c")])
    assert res.exit_code == 2 and "--train" in res.output


def test_settings_precedence_defaults_yaml_set_options(tmp_path):
    from massshift.cli.train import _settings
    from massshift.train.grpo import GRPOConfig

    cfg = tmp_path / "grpo.yaml"
    cfg.write_text(yaml.safe_dump({"seed": 5, "lr": 1e-3, "steps": 9}))
    kept = _settings(GRPOConfig, cfg, {"seed": None, "lr": None}, None)
    assert (kept.seed, kept.lr, kept.steps) == (5, 1e-3, 9)  # YAML beats the dataclass defaults
    assert _settings(GRPOConfig, None, {"seed": None}, None).seed == GRPOConfig().seed
    given = _settings(GRPOConfig, cfg, {"seed": 7}, ["steps=4"])
    assert (given.seed, given.steps) == (7, 4)  # options given on the command line beat YAML
    assert _settings(GRPOConfig, cfg, {"seed": 7}, ["seed=6"]).seed == 6  # --set, the most explicit, last


def test_yaml_seed_survives_the_command_line(tmp_path, tiny_model_dir, facts_file):
    # the CLI's --seed default used to override the YAML's seed in every trainer and in baselines
    cfg = tmp_path / "sft.yaml"
    cfg.write_text(yaml.safe_dump({"seed": 5}))
    out = tmp_path / "sft"
    res = runner.invoke(app, ["train", "sft", str(tiny_model_dir), "--facts", str(facts_file), "--out", str(out),
                              "--config", str(cfg), "--steps", "1", "--no-progress"])
    assert res.exit_code == 0, res.output
    written = yaml.safe_load((out / "config.yaml").read_text())
    assert written.get("sft", written)["seed"] == 5
    res = runner.invoke(app, ["train", "sft", str(tiny_model_dir), "--facts", str(facts_file), "--out", str(out),
                              "--config", str(cfg), "--steps", "1", "--seed", "7", "--no-progress"])
    assert res.exit_code == 0, res.output
    written = yaml.safe_load((out / "config.yaml").read_text())
    assert written.get("sft", written)["seed"] == 7
