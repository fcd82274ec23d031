"""`massshift compare` end to end on two tiny models that differ: the second is SFT-trained on part of the facts."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import FACTS
from massshift.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory, tokenizer):
    from conftest import make_model
    from massshift.train.sft import SFTConfig, train_sft

    model = make_model(len(tokenizer))
    train = pd.DataFrame({"fact_id": [str(i) for i in range(4)], "question": [f["question"] for f in FACTS[:4]],
                          "answers": [f["answers"] for f in FACTS[:4]]})
    out = tmp_path_factory.mktemp("sft")
    train_sft(model.train(), tokenizer, train, out, SFTConfig(steps=30, batch_size=4, lr=3e-3, save_every=0))
    return out / "final"


def test_compare_end_to_end(tmp_path, tiny_model_dir, trained_dir, facts_file, monkeypatch):
    monkeypatch.setenv("MASSSHIFT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "report"
    args = ["compare", str(tiny_model_dir), str(trained_dir), "--facts", str(facts_file), "--out", str(out),
            "--samples", "8", "--max-new-tokens", "6", "--n-boot", "200", "--threads", "1", "--no-progress"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "report.md" in res.output and "greedy accuracy" in res.output
    for name in ("facts.parquet", "transitions.csv", "summary.json", "report.md", "config.yaml", "env.json",
                 "scores_base.parquet", "scores_rl.parquet"):
        assert (out / name).exists(), name
    assert list((out / "figures").glob("*.png")) and list((out / "figures").glob("*.pdf"))
    facts = pd.read_parquet(out / "facts.parquet")
    summary = json.loads((out / "summary.json").read_text())
    assert len(facts) == len(FACTS) == summary["n_facts"]
    # the trained model learned its 4 training facts; the random base knows none
    assert facts["greedy_correct_base"].sum() == 0
    assert facts["greedy_correct_rl"].sum() >= 3
    assert summary["accuracy"]["rl"]["value"] == pytest.approx(facts["greedy_correct_rl"].mean())
    counts = pd.crosstab(facts["state_base"], facts["state_rl"])
    assert int(counts.to_numpy().sum()) == len(FACTS)
    # the same seed gives an identical summary (scores come from the cache the second time)
    first = (out / "summary.json").read_bytes()
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert (out / "summary.json").read_bytes() == first
    # figures are re-drawn from the tables alone
    res = runner.invoke(app, ["figures", str(out), "--copy-to", str(tmp_path / "figs")])
    assert res.exit_code == 0, res.output
    assert list((tmp_path / "figs").glob("*.png"))


def test_compare_from_score_tables(tmp_path, tiny_model_dir, trained_dir, facts_file, monkeypatch):
    monkeypatch.setenv("MASSSHIFT_CACHE", str(tmp_path / "cache"))
    for model, label in ((tiny_model_dir, "base"), (trained_dir, "rl")):
        res = runner.invoke(app, ["score", str(model), "--facts", str(facts_file), "--out", str(tmp_path / label),
                                  "--samples", "4", "--max-new-tokens", "6", "--label", label, "--no-progress"])
        assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["compare", "--base-scores", str(tmp_path / "base" / "scores.parquet"),
                              "--rl-scores", str(tmp_path / "rl" / "scores.parquet"), "--out", str(tmp_path / "r"),
                              "--n-boot", "100"])
    assert res.exit_code == 0, res.output
    # score tables over different fact sets are refused, naming the missing ids
    t = pd.read_parquet(tmp_path / "rl" / "scores.parquet").iloc[:-1]
    t.to_parquet(tmp_path / "short.parquet")
    res = runner.invoke(app, ["compare", "--base-scores", str(tmp_path / "base" / "scores.parquet"),
                              "--rl-scores", str(tmp_path / "short.parquet"), "--out", str(tmp_path / "r2")])
    assert res.exit_code == 2
    missing = pd.read_parquet(tmp_path / "rl" / "scores.parquet")["fact_id"].iloc[-1]
    assert missing in res.output
    # two RL tables with the same file name get folder/name labels instead of a crash
    (tmp_path / "rl2").mkdir()
    pd.read_parquet(tmp_path / "rl" / "scores.parquet").to_parquet(tmp_path / "rl2" / "scores.parquet")
    res = runner.invoke(app, ["compare", "--base-scores", str(tmp_path / "base" / "scores.parquet"),
                              "--rl-scores", str(tmp_path / "rl" / "scores.parquet"),
                              "--rl-scores", str(tmp_path / "rl2" / "scores.parquet"), "--out", str(tmp_path / "r3"),
                              "--n-boot", "50"])
    assert res.exit_code == 0, res.output
    assert set(pd.read_csv(tmp_path / "r3" / "trajectory.csv")["checkpoint"]) == {"base", "rl/scores", "rl2/scores"}
    # and the same folder and name twice is a clear error naming the files
    res = runner.invoke(app, ["compare", "--base-scores", str(tmp_path / "base" / "scores.parquet"),
                              "--rl-scores", str(tmp_path / "rl" / "scores.parquet"),
                              "--rl-scores", str(tmp_path / "rl" / "scores.parquet"), "--out", str(tmp_path / "r4")])
    assert res.exit_code == 2 and "same label" in res.output and "Traceback" not in res.output
