"""Run directories that describe themselves, and atomic writes.

Every command that writes results writes a directory with ``config.yaml`` (all
settings, defaults included), ``env.json`` (package versions, git revision,
device, seed), its tables and ``summary.json``. Every file goes through a temp
file in the same folder and an ``os.replace``, so an interrupted run never
leaves a half-written table behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

logger = logging.getLogger(__name__)

_UMASK = os.umask(0)
os.umask(_UMASK)

_PACKAGES = (
    "massshift", "torch", "transformers", "tokenizers", "numpy", "pandas", "pyarrow", "scipy",
    "matplotlib", "seaborn", "peft", "trl", "accelerate",
)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual mode
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):  # NaN and infinities are not valid JSON
        return None
    return obj


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` (dataclasses and numpy scalars allowed; NaN and infinities become null) as JSON."""
    return write_text(path, json.dumps(jsonable(obj), indent=2, sort_keys=False, allow_nan=False) + "\n")


def write_yaml(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as YAML, keys in the order given."""
    return write_text(path, yaml.safe_dump(jsonable(obj), sort_keys=False, allow_unicode=True))


def write_parquet(path: str | os.PathLike[str], df: Any) -> Path:
    """Write a DataFrame to parquet atomically."""
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)
    return Path(path)


def write_csv(path: str | os.PathLike[str], df: Any, index: bool = False) -> Path:
    """Write a DataFrame to CSV atomically."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=index)
    return Path(path)


def cache_root() -> Path:
    """The root of every massshift cache: ``$MASSSHIFT_CACHE`` or ``~/.cache/massshift``
    (converted models under ``models/``, score chunks under ``scores/``)."""
    return Path(os.environ.get("MASSSHIFT_CACHE") or Path.home() / ".cache" / "massshift")


def git_revision() -> str | None:
    """The git revision of the massshift checkout, or None outside a checkout."""
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def environment(seed: int | None = None, device: str | None = None) -> dict[str, Any]:
    """Package versions, git revision, platform, device and seed, for env.json."""
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": versions,
        "git_revision": git_revision(),
        "device": device,
        "seed": seed,
        "threads": _torch_threads(),
    }


def _torch_threads() -> int | None:
    torch = sys.modules.get("torch")  # never import torch just to describe the run
    return torch.get_num_threads() if torch is not None else None


def init_run_dir(
    out: str | os.PathLike[str], config: Any, seed: int | None = None, device: str | None = None
) -> Path:
    """Create ``out`` and write its ``config.yaml`` and ``env.json``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_yaml(out / "config.yaml", config)
    write_json(out / "env.json", environment(seed=seed, device=device))
    return out
