"""Sharded scoring: shards add up to the one-process table, foreign or missing chunks are named,
a killed shard is resumed, the streamed scores.parquet equals the in-memory table, and two
CPU processes under ``accelerate launch`` write the same table as one."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

import massshift.score.table as st
from massshift.lm.sampling import GenerationConfig
from massshift.score.cache import ChunkPlan, Shard, ShardError, chunk_fingerprint, write_chunk
from massshift.score.table import ScoreConfig, load_chunks, score_facts, score_to_cache, write_score_table

CFG = ScoreConfig(generation=GenerationConfig(n_samples=6, max_new_tokens=4), chunk_size=3, distractors=2)


@pytest.fixture()
def facts(facts_frame):
    return facts_frame


def _normalise(df: pd.DataFrame) -> pd.DataFrame:
    """Parquet gives list columns back as arrays; compare them as lists."""
    df = df.reset_index(drop=True).copy()
    for col in df.columns:
        if len(df) and hasattr(df[col].iloc[0], "tolist") and not isinstance(df[col].iloc[0], str):
            df[col] = df[col].map(lambda v: [x.tolist() if hasattr(x, "tolist") else x for x in v]
                                  if hasattr(v, "__len__") else v)
    return df


def test_shard_ownership_and_plan():
    shards = [Shard(i, 3) for i in range(3)]
    assert [[c for c in range(7) if s.owns(c)] for s in shards] == [[0, 3, 6], [1, 4], [2, 5]]
    assert Shard().is_main and not Shard(1, 2).is_main
    with pytest.raises(ValueError, match="does not exist"):
        Shard(2, 2)
    plan = ChunkPlan(None, "", 7, 3)
    assert plan.n_chunks == 3 and plan.bounds(2) == (6, 7) and plan.missing(Shard(1, 2)) == [1]


def test_shards_add_up_to_the_one_process_table(tokenizer, tiny_model, facts, tmp_path, monkeypatch):
    full = score_facts(tiny_model, tokenizer, facts, CFG, label="base")
    calls = []
    real = st.score_chunk

    def counting(model, tok, chunk, *args, **kw):
        calls.append(list(chunk["fact_id"]))
        return real(model, tok, chunk, *args, **kw)

    monkeypatch.setattr(st, "score_chunk", counting)
    plan = score_to_cache(tiny_model, tokenizer, facts, CFG, model_key="m", cache_dir=tmp_path, shard=Shard(1, 2))
    assert calls == [["f3", "f4", "f5"]]  # shard 1 of 2 owns chunk 1 of 3 only
    with pytest.raises(ShardError, match=r"2 of 3 chunks missing \(chunk-000000.parquet, chunk-000002.parquet\)"):
        load_chunks(plan, "base")
    score_to_cache(tiny_model, tokenizer, facts, CFG, model_key="m", cache_dir=tmp_path, shard=Shard(0, 2))
    assert calls[1:] == [["f0", "f1", "f2"], ["f6", "f7"]]
    merged = load_chunks(plan, "base")
    pd.testing.assert_frame_equal(merged, full)
    # a rerun by either shard computes nothing
    score_to_cache(tiny_model, tokenizer, facts, CFG, model_key="m", cache_dir=tmp_path, shard=Shard(0, 2))
    assert len(calls) == 3


def test_killed_shard_is_resumed(tokenizer, tiny_model, facts, tmp_path, monkeypatch):
    real = st.score_chunk
    calls = []

    def dying(model, tok, chunk, *args, **kw):
        calls.append(list(chunk["fact_id"]))
        if chunk["fact_id"].iloc[0] == "f6":
            raise KeyboardInterrupt  # the process is killed in its second chunk
        return real(model, tok, chunk, *args, **kw)

    monkeypatch.setattr(st, "score_chunk", dying)
    with pytest.raises(KeyboardInterrupt):
        score_to_cache(tiny_model, tokenizer, facts, CFG, model_key="m", cache_dir=tmp_path, shard=Shard(0, 2))
    score_to_cache(tiny_model, tokenizer, facts, CFG, model_key="m", cache_dir=tmp_path, shard=Shard(1, 2))
    folder = next((tmp_path / "scores").iterdir())
    assert sorted(p.name for p in folder.glob("chunk-*")) == ["chunk-000000.parquet", "chunk-000001.parquet"]
    assert not list(folder.glob(".*tmp*"))  # nothing half-written
    monkeypatch.setattr(st, "score_chunk", real)
    calls.clear()
    monkeypatch.setattr(st, "score_chunk", lambda *a, **k: calls.append(list(a[2]["fact_id"])) or real(*a, **k))
    plan = score_to_cache(tiny_model, tokenizer, facts, CFG, model_key="m", cache_dir=tmp_path, shard=Shard(0, 2))
    assert calls == [["f6", "f7"]]  # only the killed shard's missing chunk
    pd.testing.assert_frame_equal(load_chunks(plan, "base"), score_facts(tiny_model, tokenizer, facts, CFG,
                                                                           label="base"))


def test_merge_refuses_a_chunk_of_another_fingerprint(tokenizer, tiny_model, facts, tmp_path):
    plan = score_to_cache(tiny_model, tokenizer, facts, CFG, model_key="m", cache_dir=tmp_path)
    assert chunk_fingerprint(plan.path(1)) == plan.fingerprint
    other = score_to_cache(tiny_model, tokenizer, facts, CFG, model_key="other", cache_dir=tmp_path)
    assert other.fingerprint != plan.fingerprint
    shutil.copy(other.path(1), plan.path(1))  # a shard from other weights lands in this folder
    with pytest.raises(ShardError, match=rf"chunk-000001.parquet: this shard was written for fingerprint "
                                         rf"{other.fingerprint}, not {plan.fingerprint}"):
        load_chunks(plan, "base")
    with pytest.raises(ShardError, match="chunk-000001"):
        write_score_table(plan, tmp_path / "scores.parquet", "base")
    assert not (tmp_path / "scores.parquet").exists()  # nothing half-written
    # an unstamped chunk (written before stamps existed) is accepted: its folder is its fingerprint
    df = pd.read_parquet(other.path(1))
    df.to_parquet(plan.path(1), index=False)
    assert chunk_fingerprint(plan.path(1)) is None
    load_chunks(plan, "base")


def test_streamed_table_equals_the_in_memory_table(tokenizer, tiny_model, facts, tmp_path):
    full = score_facts(tiny_model, tokenizer, facts, CFG, label="rl")
    plan = score_to_cache(tiny_model, tokenizer, facts, CFG, model_key="m", cache_dir=tmp_path)
    summary = write_score_table(plan, tmp_path / "scores.parquet", "rl")
    meta = pq.ParquetFile(tmp_path / "scores.parquet").metadata
    assert meta.num_row_groups == plan.n_chunks == 3 and meta.num_rows == len(facts)
    written = pd.read_parquet(tmp_path / "scores.parquet")
    full.to_parquet(tmp_path / "in_memory.parquet", index=False)  # what `score` wrote before streaming
    pd.testing.assert_frame_equal(_normalise(written), _normalise(pd.read_parquet(tmp_path / "in_memory.parquet")))
    from massshift.score.formats import format_summary

    assert summary["n_facts"] == len(facts) and summary["accuracy"] == pytest.approx(full["greedy_correct"].mean())
    # what resolving auto needs, counted over the whole table (the decision itself is analysis')
    assert summary["chance"] is True and summary["sampled"] is True and summary["formats_complete"]
    expected = format_summary(full)
    for key in ("greedy", "sampled", "greedy_mean_words", "greedy_begins_span", "n_greedy_correct",
                "median_p_gold_greedy_correct", "prefix"):
        assert summary["formats"][key] == pytest.approx(expected[key]), key


def test_write_chunk_is_stamped(tmp_path):
    path = write_chunk(tmp_path / "c.parquet", pd.DataFrame({"a": [1, 2]}), "abc")
    assert chunk_fingerprint(path) == "abc" and list(pd.read_parquet(path)["a"]) == [1, 2]
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(ShardError, match="bad.parquet: not a readable parquet chunk"):
        chunk_fingerprint(tmp_path / "bad.parquet")


@pytest.mark.slow
def test_two_cpu_processes_under_accelerate_launch_match_one(tiny_model_dir, facts_file, tmp_path):
    """`accelerate launch --multi_gpu --num_processes 2 -m massshift score` on a CPU machine (two processes
    over gloo) = one process, row for row. (``--cpu`` would start one process: accelerate's simple launcher.)"""
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or shutil.which("accelerate")
    assert accelerate, "accelerate is a dependency of massshift; its launcher must be installed"
    common = [str(tiny_model_dir), "--facts", str(facts_file), "--samples", "6", "--max-new-tokens", "4",
              "--distractors", "2", "--no-progress", "--threads", "1"]
    env = {**os.environ, "MASSSHIFT_CACHE": str(tmp_path / "cache1"), "PYTHONUNBUFFERED": "1"}
    one = subprocess.run([sys.executable, "-m", "massshift", "score", *common, "--out", str(tmp_path / "one")],
                         env=env, capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    env2 = {**env, "MASSSHIFT_CACHE": str(tmp_path / "cache2")}
    two = subprocess.run([accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                          "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29517",
                          "-m", "massshift", "score", *common, "--out", str(tmp_path / "two")],
                         env=env2, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    a = pd.read_parquet(tmp_path / "one" / "scores.parquet")
    b = pd.read_parquet(tmp_path / "two" / "scores.parquet")
    pd.testing.assert_frame_equal(_normalise(a), _normalise(b))
    chunks = sorted((tmp_path / "cache2" / "scores").glob("*/chunk-*.parquet"))
    assert chunks, "the processes wrote no shards to the cache"
    settings = (tmp_path / "two" / "config.yaml").read_text()
    assert "processes: 2" in settings
    assert json.loads((tmp_path / "two" / "model_info.json").read_text())["weights_hash"]


def test_device_map_auto_scores_like_one_device(tiny_model_dir, tokenizer, facts):
    """`--device-map auto` (accelerate's dispatch; here everything lands on the CPU) gives the same numbers."""
    from massshift.lm.loading import load_model

    plain, tok, _ = load_model(str(tiny_model_dir))
    spread, _, _ = load_model(str(tiny_model_dir), device_map="auto")
    assert next(spread.parameters()).device.type == "cpu"  # no GPU here: accelerate keeps it on the CPU
    a = score_facts(plain, tok, facts, CFG, label="m")
    b = score_facts(spread, tok, facts, CFG, label="m")
    pd.testing.assert_frame_equal(a, b)
