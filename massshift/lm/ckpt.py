"""massshift's self-describing checkpoint: one ``torch.save`` file that ``massshift compare`` needs nothing
beside.

A ``.ckpt`` written by ``write_ckpt`` is a dict of tensors, dicts, lists and strings only, so
``torch.load(path, weights_only=True)`` reads it:

==============  ===============================================================================
key             value
==============  ===============================================================================
``format``      ``"massshift.ckpt"`` (what tells this file from a bare state dict)
``version``     1
``state_dict``  parameter name -> tensor, as ``model.state_dict()`` gives it (tied weights once)
``config``      the model config, ``config.to_dict()`` through JSON (so JSON types only)
``tokenizer``   file name -> contents, as ``save_pretrained`` writes them: text as ``str``,
                binary files (a sentencepiece model) as a uint8 tensor
``facts``       ``{"source": str, "records": [fact dict, ...]}``: the facts the run held out (the
                canonical columns of ``massshift.data.facts``), or ``{"source", "path"}`` (relative to
                the file's folder), or None
``meta``        where the weights came from, the massshift version, free-form strings
==============  ===============================================================================

Loading (``massshift.lm.checkpoints``) writes the config and tokenizer files once into a cache folder
keyed by their contents and builds the model from the state dict; ``held_out_facts`` reads the facts
without building anything.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from massshift.lm.specs import ModelLoadError
from massshift.rundir import atomic_path, cache_root

FORMAT = "massshift.ckpt"
VERSION = 1
_FACT_KEYS = ("fact_id", "question", "answers", "subject", "relation", "object", "popularity")


def write_ckpt(path: str | os.PathLike[str], model: Any, tokenizer: Any, facts: Any = None, *,
               facts_source: str = "", meta: Mapping[str, str] | None = None) -> Path:
    """Write ``model`` (a transformers causal LM), its ``tokenizer`` and the held-out ``facts`` (a facts
    table, or None) to ``path`` as one self-describing file; returns ``path``."""
    import torch

    import massshift

    state = {k: v.detach().to("cpu") for k, v in model.state_dict().items()}
    config = json.loads(model.config.to_json_string(use_diff=False))
    for key in ("_name_or_path", "name_or_path"):
        config.pop(key, None)
    obj = {
        "format": FORMAT, "version": VERSION, "state_dict": state, "config": config,
        "tokenizer": _tokenizer_files(tokenizer),
        "facts": None if facts is None else {"source": facts_source, "records": fact_records(facts)},
        "meta": {"massshift": getattr(massshift, "__version__", ""), **{k: str(v) for k, v in (meta or {}).items()}},
    }
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def fact_records(facts: Any) -> list[dict[str, Any]]:
    """The canonical columns of a facts table as JSON-typed dicts (NaN and missing become None)."""
    out = []
    for rec in facts.to_dict("records"):
        row: dict[str, Any] = {}
        for key in _FACT_KEYS:
            value = rec.get(key)
            if key == "answers":
                value = [str(a) for a in value]
            elif value is None or isinstance(value, float) and math.isnan(value):
                value = None
            elif key == "popularity":
                value = float(value)
            else:
                value = str(value)
            row[key] = value
        out.append(row)
    return out


def _tokenizer_files(tokenizer: Any) -> dict[str, Any]:
    import torch

    tmp = Path(tempfile.mkdtemp(prefix="massshift-tok-"))
    try:
        tokenizer.save_pretrained(str(tmp))
        files: dict[str, Any] = {}
        for f in sorted(p for p in tmp.rglob("*") if p.is_file()):
            data = f.read_bytes()
            try:
                files[str(f.relative_to(tmp))] = data.decode("utf-8")
            except UnicodeDecodeError:
                files[str(f.relative_to(tmp))] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        return files
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def is_massshift_ckpt(obj: Any) -> bool:
    """True for the dict ``write_ckpt`` writes (read back by ``torch.load``)."""
    return isinstance(obj, Mapping) and obj.get("format") == FORMAT


def read_pickle(path: Path) -> Any:
    """``torch.load(path, weights_only=True)`` (memory-mapped where the file allows), or ``ModelLoadError``
    saying why a file that holds more than tensors and plain containers is refused."""
    import pickle

    import torch

    try:
        try:
            return torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:
            if "mmap" not in str(err) and "zipfile" not in str(err):
                raise
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError, EOFError) as err:
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(err))
        found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        reason = f"it holds a {found.group(1)} object" if found else text.strip().splitlines()[0][:200]
        raise ModelLoadError(
            f"{path}: refused. massshift reads pickled checkpoints only with torch.load(weights_only=True), "
            f"because unpickling arbitrary objects can run code, and this file holds more than tensors ({reason}; "
            "in a Lightning checkpoint, usually its hyper_parameters). Re-save just the weights, e.g. "
            "torch.save(model.state_dict(), path), save_pretrained(folder) or safetensors"
        ) from err


def config_folder(path: Path, obj: Mapping[str, Any], root: Path | None = None) -> Path:
    """A folder holding the file's config.json and tokenizer files, written once into the cache
    (``root`` or ``$MASSSHIFT_CACHE/ckpt``) and keyed by their contents."""
    files = {"config.json": json.dumps(obj["config"], indent=2, sort_keys=True), **obj["tokenizer"]}
    digest = hashlib.sha256()
    for name in sorted(files):
        value = files[name]
        digest.update(name.encode() + b"\0" + (value.encode() if isinstance(value, str) else value.numpy().tobytes()))
    folder = Path(root or cache_root() / "ckpt") / digest.hexdigest()[:16]
    if (folder / "config.json").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        for name, value in files.items():
            target = tmp / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(value, str):
                target.write_text(value, encoding="utf-8")
            else:
                target.write_bytes(value.numpy().tobytes())
        try:
            os.rename(tmp, folder)
        except OSError:
            if not (folder / "config.json").is_file():
                raise ModelLoadError(f"{path}: could not write its config folder {folder}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def held_out_facts(path: str | os.PathLike[str]) -> tuple[list[dict[str, Any]], str] | None:
    """The facts a massshift ``.ckpt`` names, as (records, source), or None for any other file or a
    checkpoint that names none."""
    path = Path(path)
    if path.suffix not in (".ckpt", ".pt", ".pth") or not path.is_file():
        return None
    obj = read_pickle(path)
    if not is_massshift_ckpt(obj) or not obj.get("facts"):
        return None
    facts = obj["facts"]
    if facts.get("records") is not None:
        return list(facts["records"]), str(facts.get("source") or path)
    target = path.parent / str(facts["path"])
    if not target.is_file():
        raise ModelLoadError(f"{path}: names its held-out facts as {facts['path']}, but {target} does not exist; "
                             "pass --facts FILE")
    from massshift.data.facts import load_facts

    return fact_records(load_facts(target)), str(target)
