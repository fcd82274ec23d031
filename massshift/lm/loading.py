"""Load a checkpoint, in whatever form it comes, as a plain causal LM, its tokenizer and a fingerprint.

``load_model(spec)`` accepts:

- a Hugging Face model folder (``config.json``; ``kind="hf_folder"``);
- a hub id, resolved from the local cache only (``kind="hub"``); the network is never touched;
- a PEFT/LoRA adapter folder (``adapter_config.json``; ``kind="peft"``): its base, read from the adapter
  config or given as ``base=``, is itself loaded by ``load_model``, and the adapter is merged into it;
- a ``.gguf`` file (``kind="gguf"``): dequantised by transformers once and cached as a model folder
  (``cache_dir`` or ``$MASSSHIFT_CACHE/models`` or ``~/.cache/massshift/models``), so later loads are
  plain folder loads;
- a state-dict file (``.ckpt``, ``.pt``, ``.pth``, ``.bin``, ``.safetensors``; ``kind="state_dict"``): a
  massshift ``.ckpt`` (``massshift.lm.ckpt``) carries its config and tokenizer; a PyTorch Lightning
  ``.ckpt`` gives its ``state_dict`` (wrapper prefix stripped); any other needs ``config=`` (``--config``:
  a model folder, a cached hub id or a named model) or config.json and tokenizer files beside it;
  pickles are read with ``weights_only=True`` and nothing else;
- a torch.distributed.checkpoint folder (``.metadata`` + ``*.distcp``; ``kind="dcp"``), converted once
  with torch's ``dcp_to_torch_save`` and then loaded as a state dict;
- a name from ``NAMED_MODELS`` (``kind="named"``), e.g. ``smollm2-135m``.

Each form's loader lives in ``massshift.lm.checkpoints``; this module decides which one a spec
needs, then fingerprints the result. Every route returns the model in eval mode, a tokenizer with a pad token, and a ``ModelInfo`` whose
hashes tell whether two loads hold the same numbers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from massshift.lm.checkpoints import (
    DTYPES,
    NAMED_MODELS,
    STATE_DICT_SUFFIXES,
    Loaded,
    LoadOptions,
    ModelLoadError,
    hub_folder,
    load_dir,
    load_gguf,
    load_state_dict,
    named_gguf,
)
from massshift.lm.runtime import auto_threads, busy_cores, set_threads
from massshift.lm.specs import classify

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

__all__ = [  # the thread helpers and checkpoint names stay importable from here for existing callers
    "NAMED_MODELS", "STATE_DICT_SUFFIXES", "ModelInfo", "ModelLoadError", "auto_threads", "busy_cores",
    "check_same_tokenizer", "hash_config", "hash_vocab", "hash_weights", "load_model", "set_threads",
]

# Config entries that say where or how a model was loaded, not what it computes.
_VOLATILE_CONFIG_KEYS = frozenset({
    "_name_or_path", "name_or_path", "_model_name_or_path", "_commit_hash", "transformers_version",
    "dtype", "torch_dtype", "quantization_config", "_attn_implementation", "_attn_implementation_autoset",
})
_TOKENIZER_PROBE = "Q: What is the capital of Côte d'Ivoire?\nA: Yamoussoukro, since 1983."


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """What was loaded, and fingerprints that change exactly when the numbers can."""

    source: str  # the spec the user passed
    kind: str  # hf_folder | hub | peft | gguf | state_dict | named
    path: str  # resolved folder (for gguf / named: the converted cache folder)
    weights_hash: str  # sha256 over parameter names, dtypes, shapes and bytes; 16 hex
    dtype: str  # e.g. "float32"
    n_params: int  # unique parameters (tied weights counted once)
    tokenizer_name: str  # where the tokenizer was loaded from
    vocab_hash: str  # sha256 of the sorted vocabulary items; 16 hex
    base: str | None  # the base spec of a PEFT adapter, else None
    config_hash: str  # sha256 of the model config without load-location entries; 16 hex

    @property
    def cache_key(self) -> str:
        """What a score cache is keyed by: the weights and the vocabulary (not where they were loaded from)."""
        return f"{self.weights_hash}:{self.vocab_hash}"


def load_model(
    spec: str,
    *,
    dtype: str = "float32",
    device: str = "cpu",
    base: str | None = None,
    config: str | None = None,
    trust_remote_code: bool = False,
    cache_dir: str | None = None,
    device_map: str | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, ModelInfo]:
    """Load ``spec`` (folder, hub id, adapter, .gguf, state-dict file or named model) for scoring.

    ``dtype``: float32 | bfloat16 | float16 | auto. ``device`` is used unless ``device_map`` is given,
    which goes to ``from_pretrained`` as is. ``base`` overrides an adapter's base model; ``config`` is the
    folder with config.json and tokenizer files for a state-dict file. ``cache_dir`` is where converted
    GGUF files are kept. Raises ``ModelLoadError`` naming ``spec`` and what to do.
    """
    if dtype not in DTYPES:
        raise ModelLoadError(f"{spec}: unknown dtype {dtype!r} (--dtype); use one of {', '.join(DTYPES)}")
    opts = LoadOptions(dtype, device, trust_remote_code, cache_dir, device_map)
    start = time.perf_counter()
    model, tokenizer, kind, path, base_spec = _dispatch(str(spec), opts, base, config)
    if device_map is None:
        model.to(device)
    model.eval()
    if kind != "peft":  # adapters trained on this model then name `spec` as their base, which load_model reads
        model.name_or_path = model.config.name_or_path = str(spec)
    _ensure_pad_token(tokenizer)
    info = ModelInfo(
        source=str(spec), kind=kind, path=str(path), weights_hash=hash_weights(model),
        dtype=str(model.dtype).removeprefix("torch."),
        n_params=sum(p.numel() for p in model.parameters()),
        tokenizer_name=str(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__),
        vocab_hash=hash_vocab(tokenizer), base=base_spec, config_hash=hash_config(model.config),
    )
    logger.info("loaded %s (%s, %d params, %s) in %.1f s", spec, kind, info.n_params, info.dtype,
                time.perf_counter() - start)
    return model, tokenizer, info


def _dispatch(spec: str, opts: LoadOptions, base: str | None, config: str | None) -> Loaded:
    """Decide what ``spec`` is (``massshift.lm.specs.classify``) and hand it to its loader."""
    kind = classify(spec)
    path = Path(spec).expanduser()
    if kind == "named":
        model, tokenizer, _, folder = load_gguf(named_gguf(spec), opts)
        return model, tokenizer, "named", folder, None
    if kind == "gguf":
        return (*load_gguf(path, opts), None)
    if kind in ("state_dict", "dcp"):
        return (*load_state_dict(path, opts, config), kind, path if kind == "dcp" else path.parent, None)
    if kind == "dir":
        return load_dir(spec, path, opts, base, "hf_folder", load_model)
    return load_dir(spec, hub_folder(spec), opts, base, "hub", load_model)


def _ensure_pad_token(tokenizer: Any) -> None:
    """Give the tokenizer a pad token from its existing specials (eos first); the vocabulary is unchanged."""
    if tokenizer.pad_token is not None:
        return
    for name in ("eos_token", "bos_token", "unk_token"):
        token = getattr(tokenizer, name, None)
        if token is not None:
            tokenizer.pad_token = token
            logger.debug("pad token set to %s (%r)", name, token)
            return
    logger.warning("tokenizer %s has no pad, eos, bos or unk token; batched scoring needs one",
                   getattr(tokenizer, "name_or_path", "?"))


def hash_weights(model: torch.nn.Module) -> str:
    """sha256 (16 hex) over every state-dict entry's name, dtype, shape and raw bytes; tied tensors once."""
    digest = hashlib.sha256()
    seen: dict[tuple[int, int, tuple[int, ...]], str] = {}
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}|{str(tensor.dtype)}|{tuple(tensor.shape)}|".encode())
        if tensor.device.type == "meta":
            continue
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if key in seen:
            digest.update(f"={seen[key]}".encode())
            continue
        seen[key] = name
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(flat.view(torch.uint8).numpy().data)
    return digest.hexdigest()[:16]


def hash_vocab(tokenizer: Any) -> str:
    """sha256 (16 hex) of the sorted (token, id) items of the full vocabulary, added tokens included."""
    items = sorted(tokenizer.get_vocab().items())
    return hashlib.sha256(json.dumps(items, ensure_ascii=False).encode()).hexdigest()[:16]


def hash_config(config: Any) -> str:
    """sha256 (16 hex) of the model config, leaving out entries that only say where it was loaded from."""
    data = {k: v for k, v in config.to_dict().items() if k not in _VOLATILE_CONFIG_KEYS}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def check_same_tokenizer(info_a: ModelInfo, tok_a: Any, info_b: ModelInfo, tok_b: Any) -> None:
    """Raise ``ModelLoadError`` saying what differs when two models do not share a tokenizer."""
    diffs = []
    if len(tok_a) != len(tok_b):
        diffs.append(f"vocabulary size {len(tok_a)} vs {len(tok_b)}")
    if info_a.vocab_hash != info_b.vocab_hash:
        diffs.append(f"vocabulary hash {info_a.vocab_hash} vs {info_b.vocab_hash}")
    for name in ("bos_token", "eos_token", "pad_token", "unk_token"):
        a = (getattr(tok_a, name, None), getattr(tok_a, f"{name}_id", None))
        b = (getattr(tok_b, name, None), getattr(tok_b, f"{name}_id", None))
        if a != b:
            diffs.append(f"{name} {a[0]!r} (id {a[1]}) vs {b[0]!r} (id {b[1]})")
    ids_a, ids_b = tok_a(_TOKENIZER_PROBE)["input_ids"], tok_b(_TOKENIZER_PROBE)["input_ids"]
    if ids_a != ids_b:
        diffs.append(f"the probe text {_TOKENIZER_PROBE!r} encodes as {ids_a[:12]} vs {ids_b[:12]}")
    if diffs:
        raise ModelLoadError(
            f"{info_a.source} and {info_b.source} do not share a tokenizer: {'; '.join(diffs)}. "
            "Both models must use the same tokenizer for their answer probabilities to be comparable"
        )
