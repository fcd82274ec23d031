"""--judge: a model grades the answers the string matcher rejects; verdicts cached; counted in judge.json."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from conftest import make_model
from massshift.cli import app
from massshift.data.matching import MatchConfig
from massshift.lm.judge import JUDGE_PROMPT, Judge

runner = CliRunner()


@pytest.fixture()
def judge(tiny_model, tokenizer, tmp_path):
    return Judge(tiny_model, tokenizer, "tiny:key", MatchConfig(mode="exact"), cache_dir=tmp_path)


def test_string_matches_are_kept_and_rejections_go_to_the_judge(judge, monkeypatch):
    calls = []

    def fake_margin(prediction, answers):
        calls.append(prediction)
        return 1.0 if "Paris" in prediction else -1.0

    monkeypatch.setattr(judge, "margin", fake_margin)
    assert judge("Paris", ["Paris"]) and calls == []  # exact: no judge call
    assert judge("It is Paris, of course", ["Paris"]) and calls == ["It is Paris, of course"]
    assert not judge("Lyon", ["Paris"])
    assert not judge("   ", ["Paris"]) and "   " not in calls  # empty answers are never judged
    summary = judge.summary()
    assert summary["n_answers"] == 4 and summary["n_graded"] == 2 and summary["n_changed"] == 1
    assert summary["agreement_exact"] == pytest.approx(3 / 4)
    assert summary["agreement_contains"] == 1.0  # contains also accepts the sentence here
    assert summary["prompt"] == JUDGE_PROMPT


def test_margin_is_the_yes_no_log_odds_and_is_cached(judge, tiny_model, tokenizer, tmp_path):
    margin = judge.margin("Roma", ["Rome"])
    ids = tokenizer(judge.prompt("Roma", ["Rome"]), return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logp = torch.log_softmax(tiny_model(ids).logits[0, -1], dim=-1)
    expected = torch.logsumexp(logp[sorted(judge.yes)], 0) - torch.logsumexp(logp[sorted(judge.no)], 0)
    assert margin == pytest.approx(float(expected), abs=1e-5)
    judge.save()
    again = Judge(tiny_model, tokenizer, "tiny:key", MatchConfig(mode="exact"), cache_dir=tmp_path)
    assert again.margins == judge.margins  # read back from judge/<fingerprint>.json
    other = Judge(make_model(len(tokenizer), seed=3), tokenizer, "other:key", MatchConfig(mode="exact"))
    assert other.fingerprint != judge.fingerprint and other.__qualname__ != judge.__qualname__


def test_cli_judge_writes_judge_json_and_keys_the_cache(tmp_path, tiny_model_dir, facts_file, monkeypatch):
    monkeypatch.setenv("MASSSHIFT_CACHE", str(tmp_path / "cache"))
    base = ["score", str(tiny_model_dir), "--facts", str(facts_file), "--samples", "2", "--max-new-tokens", "3",
            "--no-progress"]
    res = runner.invoke(app, [*base, "--out", str(tmp_path / "plain")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, [*base, "--out", str(tmp_path / "judged"), "--judge", str(tiny_model_dir)])
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "judged" / "judge.json").read_text())
    assert summary["n_answers"] >= 1 and summary["n_graded"] <= summary["n_answers"]
    plain = pd.read_parquet(tmp_path / "plain" / "scores.parquet")
    judged = pd.read_parquet(tmp_path / "judged" / "scores.parquet")
    assert (judged["n_correct"] >= plain["n_correct"]).all()  # the judge only ever adds correct answers
    assert len(list((tmp_path / "cache" / "scores").iterdir())) == 2  # its own cache entry
    assert (tmp_path / "cache" / "judge").is_dir()
    res = runner.invoke(app, [*base, "--out", str(tmp_path / "x"), "--judge", "./no/such/judge"])
    assert res.exit_code == 2 and "no such file" in res.output


def test_names_other_follows_the_anti_hedging_rule():
    from massshift.data.matching import names_other

    assert names_other("Paris or Lyon", ["Paris"], ["Lyon", "Nice"])
    assert not names_other("Paris", ["Paris"], ["Lyon"])
    assert not names_other("Papua New Guinea", ["Papua New Guinea"], ["Guinea"])  # part of the gold: not another
    assert not names_other("Lyonnais food", ["Paris"], ["Lyon"])  # whole words only


def test_judge_reward_is_the_verdict_and_hedges_earn_nothing_unasked():
    from massshift.lm.judge import judge_reward

    asked = []

    def judge(text, answers):
        asked.append(text)
        return "capital" in text

    values = {("Paris",): ["Lyon", "Nice"]}
    reward = judge_reward(judge, values)
    assert reward("the capital city", ["Paris"]) == 1.0 and reward("no idea", ["Paris"]) == 0.0
    assert reward("the capital, or Lyon", ["Paris"]) == 0.0 and "the capital, or Lyon" not in asked
    assert judge_reward(judge)("the capital, or Lyon", ["Paris"]) == 1.0  # without relations: the judge alone


@pytest.mark.parametrize("trainer", ["rl", "dpo"])
def test_train_with_a_judge_rewards_by_its_verdicts(tmp_path, tiny_model_dir, facts_file, trainer):
    out = tmp_path / trainer
    args = {"rl": ["--steps", "1", "--batch-size", "2", "-G", "2"], "dpo": ["--steps", "1", "--samples", "2"]}[trainer]
    res = runner.invoke(app, ["train", trainer, str(tiny_model_dir), "--facts", str(facts_file), "--out", str(out),
                              "--judge", str(tiny_model_dir), "--set", "max_new_tokens=3", "--no-progress",
                              "--no-ckpt", *args])
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "judge.json").read_text())
    assert summary["n_graded"] >= 1  # the random model's answers fail exact matching: the judge graded them
    assert (out / "final" / "config.json").exists()
