"""massshift's self-describing .ckpt: readable with weights_only, loads to the same numbers, and
`massshift compare base.ckpt rl.ckpt` needs no other argument; --config takes a folder, hub id or named model."""

from __future__ import annotations

import copy
import shutil

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from conftest import FACTS, make_model
from massshift.cli import app
from massshift.data.facts import facts_from_records
from massshift.lm import checkpoints
from massshift.lm.ckpt import FORMAT, held_out_facts, write_ckpt
from massshift.lm.loading import ModelLoadError, load_model

runner = CliRunner()
PLAIN = (dict, list, str, int, float, bool, type(None), torch.Tensor)


def _facts(n: int = len(FACTS)) -> pd.DataFrame:
    return facts_from_records([{**f, "relation": "capital"} for f in FACTS[:n]])


def _logits(model, tokenizer) -> torch.Tensor:
    ids = tokenizer("Q: What is the capital of Italy?\nA: Rome", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model(ids).logits


def _walk(obj):
    yield obj
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield k
            yield from _walk(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _walk(v)


@pytest.fixture()
def ckpt_pair(tmp_path, tokenizer, tiny_model, monkeypatch):
    monkeypatch.setenv("MASSSHIFT_CACHE", str(tmp_path / "cache"))
    rl = make_model(len(tokenizer), seed=5)
    facts = _facts()
    write_ckpt(tmp_path / "base.ckpt", tiny_model, tokenizer, facts, facts_source="test facts")
    write_ckpt(tmp_path / "rl.ckpt", rl, tokenizer, facts, facts_source="test facts")
    return tmp_path


def test_a_ckpt_holds_only_plain_types_and_loads_to_the_same_numbers(ckpt_pair, tiny_model, tokenizer,
                                                                     tiny_model_dir):
    obj = torch.load(ckpt_pair / "base.ckpt", weights_only=True)
    assert obj["format"] == FORMAT and obj["version"] == 1
    assert set(obj) == {"format", "version", "state_dict", "config", "tokenizer", "facts", "meta"}
    assert all(isinstance(x, PLAIN) for x in _walk(obj))
    assert obj["config"]["model_type"] == "llama" and "tokenizer.json" in obj["tokenizer"]
    assert [r["fact_id"] for r in obj["facts"]["records"]] == list(_facts()["fact_id"])
    model, tok, info = load_model(str(ckpt_pair / "base.ckpt"))
    assert info.kind == "state_dict"
    assert torch.equal(_logits(model, tok), _logits(tiny_model, tokenizer))
    assert tok.get_vocab() == tokenizer.get_vocab()
    _, _, folder_info = load_model(str(tiny_model_dir))
    assert info.cache_key == folder_info.cache_key  # same weights, same vocabulary: same score cache
    records, source = held_out_facts(ckpt_pair / "base.ckpt")
    assert source == "test facts" and len(records) == len(FACTS)


def test_compare_two_ckpts_with_no_other_argument(ckpt_pair, monkeypatch):
    monkeypatch.chdir(ckpt_pair)
    res = runner.invoke(app, ["compare", "base.ckpt", "rl.ckpt"])
    assert res.exit_code == 0, res.output
    assert "report: report/report.md" in res.output and " points" in res.output
    table = pd.read_parquet(ckpt_pair / "report" / "facts.parquet")
    assert set(table["fact_id"]) == set(_facts()["fact_id"])
    assert "test facts (held out, from base.ckpt)" in (ckpt_pair / "report" / "config.yaml").read_text()


def test_ckpts_naming_different_facts_are_refused_and_one_naming_none_follows(tmp_path, tokenizer, tiny_model, monkeypatch):
    monkeypatch.setenv("MASSSHIFT_CACHE", str(tmp_path / "cache"))
    write_ckpt(tmp_path / "a.ckpt", tiny_model, tokenizer, _facts())
    write_ckpt(tmp_path / "b.ckpt", tiny_model, tokenizer, _facts(5))
    write_ckpt(tmp_path / "none.ckpt", tiny_model, tokenizer, None)
    res = runner.invoke(app, ["compare", str(tmp_path / "a.ckpt"), str(tmp_path / "b.ckpt")])
    assert res.exit_code == 2 and "name different held-out facts (8 and 5 facts, 5 in common)" in res.output
    assert "--facts" in res.output
    cheap = ["--samples", "0", "--distractors", "0", "--controls", "0", "--max-new-tokens", "2", "--no-progress",
             "--n-boot", "20"]
    out = tmp_path / "report"
    res = runner.invoke(app, ["compare", str(tmp_path / "none.ckpt"), str(tmp_path / "a.ckpt"), "--out", str(out),
                              *cheap])
    assert res.exit_code == 0, res.output  # one names none: the other's facts
    assert set(pd.read_parquet(out / "facts.parquet")["fact_id"]) == set(_facts()["fact_id"])


def test_ckpts_naming_no_facts_get_the_builtin_set_asked_the_models_way(tmp_path, tokenizer, tiny_model,
                                                                          monkeypatch):
    import yaml

    from massshift.data.facts import DEFAULT_FACTS_ABOUT, load_default_facts

    monkeypatch.setenv("MASSSHIFT_CACHE", str(tmp_path / "cache"))
    cheap = ["--samples", "0", "--distractors", "0", "--controls", "0", "--max-new-tokens", "2", "--no-progress",
             "--n-boot", "20"]
    write_ckpt(tmp_path / "plain.ckpt", tiny_model, tokenizer, None)
    res = runner.invoke(app, ["compare", str(tmp_path / "plain.ckpt"), str(tmp_path / "plain.ckpt"),
                              "--out", str(tmp_path / "r1"), *cheap])
    assert res.exit_code == 0, res.output
    cfg = yaml.safe_load((tmp_path / "r1" / "config.yaml").read_text())
    assert cfg["facts"] == DEFAULT_FACTS_ABOUT and "no checkpoint names held-out facts" in cfg["facts_why"]
    assert cfg["score"]["prompt"]["chat"] is False  # the tokenizer has no chat template
    facts = pd.read_parquet(tmp_path / "r1" / "facts.parquet")
    assert set(facts["fact_id"]) == set(load_default_facts()["fact_id"])

    chat_tok = copy.deepcopy(tokenizer)
    chat_tok.chat_template = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}<eos>{% endfor %}"
                              "{% if add_generation_prompt %}<assistant>{% endif %}")
    write_ckpt(tmp_path / "chat.ckpt", tiny_model, chat_tok, None)
    res = runner.invoke(app, ["compare", str(tmp_path / "chat.ckpt"), str(tmp_path / "chat.ckpt"),
                              "--out", str(tmp_path / "r2"), *cheap])
    assert res.exit_code == 0, res.output
    assert yaml.safe_load((tmp_path / "r2" / "config.yaml").read_text())["score"]["prompt"]["chat"] is True
    res = runner.invoke(app, ["compare", str(tmp_path / "chat.ckpt"), str(tmp_path / "chat.ckpt"), "--no-chat",
                              "--out", str(tmp_path / "r3"), *cheap])
    assert res.exit_code == 0, res.output
    assert yaml.safe_load((tmp_path / "r3" / "config.yaml").read_text())["score"]["prompt"]["chat"] is False


def test_a_bare_state_dict_names_the_config_flag(tmp_path, tiny_model, facts_file):
    for name in ("base.ckpt", "rl.ckpt"):
        torch.save(tiny_model.state_dict(), tmp_path / name)
    res = runner.invoke(app, ["compare", str(tmp_path / "base.ckpt"), str(tmp_path / "rl.ckpt"),
                              "--facts", str(facts_file)])
    assert res.exit_code == 2
    assert "--config" in res.output and "config=FOLDER" not in res.output
    with pytest.raises(ModelLoadError, match="Pass --config"):
        load_model(str(tmp_path / "base.ckpt"))


def test_config_takes_a_folder_a_hub_id_or_a_named_model(tmp_path, tiny_model, tokenizer, tiny_model_dir,
                                                          monkeypatch):
    import huggingface_hub.constants

    path = tmp_path / "weights.pt"
    torch.save(tiny_model.state_dict(), path)
    ref = _logits(tiny_model, tokenizer)
    model, _, _ = load_model(str(path), config=str(tiny_model_dir))
    assert torch.equal(_logits(model, tokenizer), ref)

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--massshift-test--tiny"
    shutil.copytree(tiny_model_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    model, _, _ = load_model(str(path), config="massshift-test/tiny")
    assert torch.equal(_logits(model, tokenizer), ref)
    with pytest.raises(ModelLoadError, match="--config massshift-test/absent: the model is not in the local"):
        load_model(str(path), config="massshift-test/absent")

    # a named model's config is its converted GGUF folder (converted once; here already in place)
    monkeypatch.setitem(checkpoints.NAMED_MODELS, "tiny-named", ("massshift-no-dist", "tiny.gguf"))
    monkeypatch.setattr(checkpoints, "named_gguf", lambda name: tmp_path / "tiny.gguf")
    monkeypatch.setattr(checkpoints, "_gguf_folder", lambda gguf, opts: tiny_model_dir)
    model, _, _ = load_model(str(path), config="tiny-named")
    assert torch.equal(_logits(model, tokenizer), ref)


def test_demo_ckpts_are_written_by_write_ckpts(tmp_path, tiny_model_dir, monkeypatch):
    from massshift.studies.demo import write_ckpts

    monkeypatch.setenv("MASSSHIFT_CACHE", str(tmp_path / "cache"))
    facts = _facts()
    written = write_ckpts(tmp_path, {"base": tiny_model_dir, "rl": tiny_model_dir}, facts, tmp_path / "test.jsonl")
    assert set(written) == {"base", "rl"} and (tmp_path / "rl.ckpt").is_file()
    records, _ = held_out_facts(tmp_path / "base.ckpt")
    assert [r["fact_id"] for r in records] == list(facts["fact_id"])


def test_train_writes_base_and_rl_ckpts_that_compare_needs_nothing_else_for(tmp_path, tiny_model_dir, facts_file,
                                                                            monkeypatch):
    monkeypatch.setenv("MASSSHIFT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "rl"
    res = runner.invoke(app, ["train", "rl", str(tiny_model_dir), "--facts", str(facts_file), "--eval-facts",
                              str(facts_file), "--out", str(out), "--steps", "2", "--batch-size", "2",
                              "--set", "num_generations=2", "--set", "max_new_tokens=3", "--save-every", "0",
                              "--no-progress"])
    assert res.exit_code == 0, res.output
    assert (out / "base.ckpt").is_file() and (out / "rl.ckpt").is_file()
    records, source = held_out_facts(out / "rl.ckpt")
    assert len(records) == len(FACTS) and "--eval-facts" in source
    monkeypatch.chdir(out)
    res = runner.invoke(app, ["compare", "base.ckpt", "rl.ckpt", "--samples", "2", "--max-new-tokens", "3"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["train", "sft", str(tiny_model_dir), "--facts", str(facts_file), "--out",
                              str(tmp_path / "sft"), "--steps", "1", "--no-ckpt", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert not list((tmp_path / "sft").glob("*.ckpt"))
