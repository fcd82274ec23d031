"""Facts from a Hugging Face dataset by name: ``hf:NAME[:SPLIT]``, read from the local cache only.

``load_hf_facts("hf:popqa:test")`` opens the dataset with the ``datasets`` library in offline mode (the
network is never touched, whatever ``HF_HUB_OFFLINE`` says), so only a dataset that was loaded once
before on this machine (it sits in ``$HF_DATASETS_CACHE``, by default
``~/.cache/huggingface/datasets``) or a folder written by ``Dataset.save_to_disk`` can be read; anything
else is a ``FactsError`` that says how to get it. Rows are mapped by the schema presets of
``massshift.data.presets`` (PopQA, EntityQuestions, TriviaQA, NQ-open, SimpleQA, canonical), exactly as
a facts file would be.

Without ``:SPLIT``, a dataset with one split gives that split, one with several gives ``test`` when it
has one (logged); otherwise the error lists the splits.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from massshift.data.facts import FactsError, facts_from_records

logger = logging.getLogger(__name__)

PREFIX = "hf:"


def parse_hf_spec(spec: str) -> tuple[str, str | None]:
    """(name, split or None) of ``hf:NAME[:SPLIT]``; ``FactsError`` for anything else."""
    if not spec.startswith(PREFIX) or not spec[len(PREFIX):].strip(":"):
        raise FactsError(f"{spec}: expected hf:NAME or hf:NAME:SPLIT (e.g. hf:akariasai/PopQA:test)")
    name, _, split = spec[len(PREFIX):].partition(":")
    return name, split or None


@contextmanager
def _offline() -> Iterator[None]:
    """``datasets`` and ``huggingface_hub`` in offline mode for the block (their flags are read at import)."""
    import datasets.config
    import huggingface_hub.constants

    saved = datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = huggingface_hub.constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE = saved


def _open(spec: str, name: str, cache_dir: str | None) -> Any:
    """The dataset (a DatasetDict, or a Dataset from ``save_to_disk``) from the local cache."""
    try:
        import datasets
    except ImportError:
        raise FactsError(f"{spec}: reading Hugging Face datasets needs the datasets package: "
                         "pip install 'massshift[hf]'") from None
    folder = Path(name).expanduser()
    if folder.is_dir() and ((folder / "state.json").is_file() or (folder / "dataset_dict.json").is_file()):
        return datasets.load_from_disk(str(folder))
    with _offline():
        try:
            return datasets.load_dataset(name, cache_dir=cache_dir)
        except (ConnectionError, FileNotFoundError, ValueError) as err:
            cache = cache_dir or datasets.config.HF_DATASETS_CACHE
            raise FactsError(
                f"{spec}: the dataset {name!r} is not in the local datasets cache ({cache}) and massshift never "
                f"downloads. On a machine with network run `python -c \"import datasets; "
                f"datasets.load_dataset('{name}')\"` (HF_DATASETS_CACHE says where the cache is), or give a "
                f"facts file ({type(err).__name__}: {str(err)[:200]})"
            ) from None


def _pick_split(spec: str, data: Any, split: str | None) -> Any:
    if not hasattr(data, "keys"):  # one Dataset (save_to_disk of a single split)
        return data
    splits = list(data.keys())
    if split is not None:
        if split not in splits:
            raise FactsError(f"{spec}: no split {split!r}; the dataset has {', '.join(splits)}")
        return data[split]
    if len(splits) == 1:
        return data[splits[0]]
    if "test" in splits:
        logger.info("%s: using the test split (the dataset has %s; hf:NAME:SPLIT picks one)", spec, ", ".join(splits))
        return data["test"]
    raise FactsError(f"{spec}: the dataset has splits {', '.join(splits)}; choose one with hf:NAME:SPLIT")


def load_hf_facts(spec: str, schema: str = "auto", skip_invalid: bool = False,
                  cache_dir: str | None = None) -> pd.DataFrame:
    """The canonical facts table of ``hf:NAME[:SPLIT]`` (same columns and rules as ``load_facts``)."""
    name, split = parse_hf_spec(spec)
    rows = _pick_split(spec, _open(spec, name, cache_dir), split)
    df = facts_from_records(rows.to_list(), schema=schema, skip_invalid=skip_invalid, source=spec)
    logger.info("%s: %d facts (schema %s)", spec, len(df), df.attrs.get("schema"))
    return df
