"""Shared fixtures: a tiny byte-level BPE tokenizer trained on the fly and tiny random models.

Nothing here downloads anything; everything is built in the fixture, never at import.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

CORPUS = [
    "Q: What is the capital of France?\nA: Paris\n",
    "Q: What is the capital of Germany?\nA: Berlin\n",
    "Q: What is the capital of Italy?\nA: Rome\n",
    "Q: Where was Ada Lovelace born?\nA: London\n",
    "Q: Who wrote Hamlet?\nA: William Shakespeare\n",
    "The capital of Spain is Madrid. The capital of Japan is Tokyo.\n",
    "Berlin, Paris, Rome, London, Madrid, Tokyo, Lisbon, Vienna, Warsaw, Prague.\n",
] * 4

FACTS = [
    {"question": "What is the capital of France?", "answers": ["Paris", "Paris, France"]},
    {"question": "What is the capital of Germany?", "answers": ["Berlin"]},
    {"question": "What is the capital of Italy?", "answers": ["Rome", "Roma", "City of Rome"]},
    {"question": "Where was Ada Lovelace born?", "answers": ["London"]},
    {"question": "Who wrote Hamlet?", "answers": ["William Shakespeare", "Shakespeare"]},
    {"question": "What is the capital of Spain?", "answers": ["Madrid"]},
    {"question": "What is the capital of Japan?", "answers": ["Tokyo", "Tokio"]},
    {"question": "What is the capital of Austria?", "answers": ["Vienna", "Wien"]},
]


def make_tokenizer():
    """A byte-level BPE tokenizer (vocab 300) trained on CORPUS, wrapped for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<pad>", "<eos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>")


def make_model(vocab_size: int, seed: int = 0, arch: str = "llama"):
    """A tiny random-init causal LM (about 60k parameters)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    if arch == "gpt2":
        cfg = GPT2Config(vocab_size=vocab_size, n_embd=32, n_layer=2, n_head=4, n_positions=256,
                         bos_token_id=1, eos_token_id=1)
        model = GPT2LMHeadModel(cfg)
    else:
        cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=2, intermediate_size=64, max_position_embeddings=256,
                          pad_token_id=0, bos_token_id=1, eos_token_id=1)
        model = LlamaForCausalLM(cfg)
    return model.eval()


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread in tests that use torch (analysis tests never import it)."""
    import sys

    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


@pytest.fixture(scope="session")
def tokenizer():
    return make_tokenizer()


@pytest.fixture(scope="session")
def tiny_model(tokenizer):
    return make_model(len(tokenizer))


@pytest.fixture(scope="session")
def tiny_gpt2(tokenizer):
    return make_model(len(tokenizer), seed=1, arch="gpt2")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_model, tokenizer):
    """The tiny Llama saved as a Hugging Face folder with its tokenizer."""
    d = tmp_path_factory.mktemp("tiny_model")
    tiny_model.save_pretrained(d)
    tokenizer.save_pretrained(d)
    return d


@pytest.fixture()
def facts_frame():
    """FACTS as a facts table with ids f0, f1, ... and relation "capital"."""
    import pandas as pd

    return pd.DataFrame({"fact_id": [f"f{i}" for i in range(len(FACTS))],
                         "question": [f["question"] for f in FACTS],
                         "answers": [f["answers"] for f in FACTS],
                         "relation": ["capital"] * len(FACTS)})


@pytest.fixture()
def facts_file(tmp_path):
    import json

    path = tmp_path / "facts.jsonl"
    path.write_text("".join(json.dumps(f) + "\n" for f in FACTS), encoding="utf-8")
    return path
