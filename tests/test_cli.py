"""The command line, end to end on tiny inputs: split, dedup, score, and clear errors."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from massshift.cli import app
from massshift.data.facts import load_facts
from massshift.data.split import verify_disjoint

runner = CliRunner()


def _popqa_file(path, n=60):
    rows = []
    for i in range(n):
        subj = f"Person {i // 2}"
        prop = "occupation" if i % 2 else "place of birth"
        obj = f"Value {i % 7}"
        rows.append({"id": i, "subj": subj, "prop": prop, "obj": obj, "s_pop": 100 + i,
                     "question": f"What is {subj}'s {prop}?", "possible_answers": json.dumps([obj, obj.lower()])})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_split_popqa_file(tmp_path):
    src = _popqa_file(tmp_path / "popqa.jsonl")
    res = runner.invoke(app, ["split", str(src), "--out", str(tmp_path / "split"), "--test-size", "0.4"])
    assert res.exit_code == 0, res.output
    assert "0 overlapping" in res.output
    train, test = load_facts(tmp_path / "split" / "train.jsonl"), load_facts(tmp_path / "split" / "test.jsonl")
    assert len(train) + len(test) == 60 and len(test) > 0
    assert verify_disjoint(train, test) == []
    audit = pd.read_csv(tmp_path / "split" / "audit.csv")
    assert len(audit) == 60 and set(audit["side"]) == {"train", "test"}
    assert (tmp_path / "split" / "config.yaml").exists() and (tmp_path / "split" / "env.json").exists()


def test_dedup(tmp_path):
    src = _popqa_file(tmp_path / "popqa.jsonl")
    res = runner.invoke(app, ["dedup", str(src), str(src), "--out", str(tmp_path / "dd")])
    assert res.exit_code == 0, res.output
    assert "kept 0 test facts, removed 60" in res.output


def test_bad_facts_file_names_file_line_field(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "Q?", "answers": ["a"]}\n{"question": "", "answers": ["b"]}\n', encoding="utf-8")
    res = runner.invoke(app, ["split", str(bad), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2
    assert "bad.jsonl" in res.output and "line 2" in res.output and "question" in res.output
    assert not (tmp_path / "o").exists()  # nothing half-written


def test_score_writes_a_run_directory(tmp_path, tiny_model_dir, facts_file, monkeypatch):
    monkeypatch.setenv("MASSSHIFT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "scores"
    args = ["score", str(tiny_model_dir), "--facts", str(facts_file), "--out", str(out), "--samples", "4",
            "--max-new-tokens", "4", "--threads", "1", "--label", "base", "--no-progress"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    table = pd.read_parquet(out / "scores.parquet")
    assert len(table) == 8 and (table["model"] == "base").all() and (table["n_samples"] == 4).all()
    for name in ("config.yaml", "env.json", "model_info.json"):
        assert (out / name).exists()
    assert len(list((tmp_path / "cache" / "scores").iterdir())) == 1
    again = runner.invoke(app, args)  # a cache hit: identical table
    assert again.exit_code == 0
    pd.testing.assert_frame_equal(pd.read_parquet(out / "scores.parquet"), table)


@pytest.mark.parametrize("args,message", [
    (["score", "/no/such/model", "--facts", "FACTS", "--out", "OUT"], "no such file"),
    (["score", "MODEL", "--facts", "FACTS", "--out", "OUT", "--match", "fuzzy"], "match mode"),
    (["score", "MODEL", "--facts", "FACTS", "--out", "OUT", "--temperature", "-1"], "temperature"),
    (["compare", "MODEL", "--facts", "FACTS"], "at least one RL"),
])
def test_errors_are_clear(tmp_path, tiny_model_dir, facts_file, args, message):
    args = [a.replace("FACTS", str(facts_file)).replace("OUT", str(tmp_path / "o")).replace("MODEL", str(tiny_model_dir))
            for a in args]
    res = runner.invoke(app, args)
    assert res.exit_code == 2
    assert message in res.output
