"""Pretraining a tiny model on a tiny world: the loss falls, the folder reloads, seeds reproduce."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from massshift.synthetic.pretrain import PretrainConfig, build_model, lr_at, pretrain
from massshift.synthetic.world import WorldConfig, build_world, load_world_tokenizer, write_world

TINY_MODEL = dict(d_model=32, n_layers=2, n_heads=2, d_ff=64, context_length=32, batch_size=8, lr=1e-2,
                  warmup_steps=5, max_steps=50, log_every=25)


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory) -> Path:
    world = build_world(WorldConfig(seed=1, n_people=40, n_values=8, exposure_cap=6, relations=("birth_city", "pet")))
    return write_world(world, tmp_path_factory.mktemp("world"))


@pytest.fixture(scope="module")
def run(world_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("model")
    return pretrain(world_dir, out, PretrainConfig(seed=7, **TINY_MODEL))


def test_loss_falls(run):
    assert len(run.losses) == run.steps == 50
    assert run.losses[0] > 3.0  # about ln(vocab) at initialisation
    assert run.final_loss < 0.7 * run.losses[0]
    assert run.tokens_per_s > 0 and run.wall_s > 0
    log = [json.loads(line) for line in (run.out_dir / "pretrain_log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log] == list(range(1, 51))
    assert [row["loss"] for row in log] == run.losses
    assert log[-1]["tokens"] == 50 * 8 * 32
    summary = json.loads((run.out_dir / "summary.json").read_text())
    assert summary["steps"] == 50 and summary["n_params"] == run.n_params
    assert PretrainConfig.from_yaml(run.out_dir / "config.yaml") == PretrainConfig(seed=7, **TINY_MODEL)
    assert (run.out_dir / "env.json").exists() and (run.out_dir / "model.safetensors").exists()


def test_saved_folder_reloads_with_identical_logits(run, world_dir):
    model = AutoModelForCausalLM.from_pretrained(str(run.out_dir))
    tokenizer = AutoTokenizer.from_pretrained(str(run.out_dir))
    world_tok = load_world_tokenizer(world_dir)
    prompt = (world_dir / "facts.jsonl").read_text().splitlines()[0]
    question = json.loads(prompt)["question"]
    text = f"Q: {question}\nA:"
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    assert ids[0].tolist() == world_tok.encode(text, add_special_tokens=False)
    with torch.no_grad():
        a = model(input_ids=ids).logits  # (1, seq, vocab)
        b = run.model(input_ids=ids).logits
    assert a.shape == (1, ids.shape[1], len(tokenizer))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id


def test_same_seed_same_run(run, world_dir, tmp_path: Path):
    full = pretrain(world_dir, tmp_path / "full", PretrainConfig(seed=7, **TINY_MODEL))
    assert full.losses == run.losses
    other = pretrain(world_dir, tmp_path / "other", PretrainConfig(seed=8, **{**TINY_MODEL, "max_steps": 3}))
    assert other.losses[0] != run.losses[0]


def test_gpt2_builds_and_tiny_llama_size(world_dir):
    tok = load_world_tokenizer(world_dir)
    gpt = build_model(PretrainConfig(architecture="gpt2", **TINY_MODEL), tok)
    assert gpt.config.model_type == "gpt2" and gpt.config.vocab_size == len(tok)
    llama = build_model(PretrainConfig(**TINY_MODEL), tok)
    v, d, f = len(tok), 32, 64
    expected = 2 * v * d + 2 * (4 * d * d + 3 * d * f + 2 * d) + d  # untied embeddings, RMSNorm weights
    assert sum(p.numel() for p in llama.parameters()) == expected
    # building a model does not touch the global RNG
    state = torch.random.get_rng_state()
    build_model(PretrainConfig(**TINY_MODEL), tok)
    assert torch.equal(state, torch.random.get_rng_state())


def test_schedule_and_validation():
    cfg = PretrainConfig(lr=1.0, min_lr_ratio=0.1, warmup_steps=10)
    assert lr_at(0, 100, cfg) == pytest.approx(0.1)
    assert lr_at(9, 100, cfg) == pytest.approx(1.0)
    assert lr_at(99, 100, cfg) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="n_heads"):
        PretrainConfig(d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="architecture"):
        PretrainConfig(architecture="mamba")
    with pytest.raises(ValueError, match="unknown PretrainConfig setting"):
        PretrainConfig.from_dict({"d_modle": 8})
