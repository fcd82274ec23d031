"""Score-table chunks on disk: sharding across processes, fingerprint checks, streaming merge.

A score table is built chunk by chunk (``score_table``); each chunk is one parquet
file in ``<cache>/scores/<fingerprint>/``, written atomically and stamped with the
fingerprint in its parquet metadata. That one layout serves three needs:

- resume: a chunk that exists is read, never recomputed;
- data parallel: under ``accelerate launch`` each process computes the chunks
  ``i`` with ``i % num_processes == process_index`` (its shard), into the same folder;
  the main process waits for all of them and merges. A chunk is the same computation
  whichever process runs it, so the merged table equals a one-process run row for row,
  and a rerun after a process died computes only the chunks that are missing;
- flat memory: ``merge_chunks`` writes ``scores.parquet`` one row group per chunk,
  never holding the whole table (states are resolved first from a few columns of every chunk).

Merging refuses a chunk stamped with another fingerprint and names it. Chunks from
before the stamp existed (no metadata) are accepted: their folder name is the
fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from massshift.configio import help_field
from massshift.rundir import atomic_path, cache_root, write_json

logger = logging.getLogger(__name__)

FINGERPRINT_KEY = b"massshift_fingerprint"


class ShardError(RuntimeError):
    """A chunk that cannot be merged (another fingerprint, missing, or unreadable)."""


@dataclass(frozen=True)
class Shard:
    """This process's share of the chunks: chunk ``i`` belongs to shard ``i % count``."""

    index: int = help_field(0, help="This process's shard, in [0, count).")
    count: int = help_field(1, help="Number of shards the chunks are split over.")

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"shard {self.index} of {self.count} does not exist")

    @property
    def is_main(self) -> bool:
        return self.index == 0

    def owns(self, chunk: int) -> bool:
        return chunk % self.count == self.index


def launched_world_size() -> int:
    """Processes in this launch (``WORLD_SIZE`` set by ``accelerate launch`` / torchrun; 1 otherwise)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


class Launch:
    """The process group of an ``accelerate launch`` run, or a single process.

    ``shard`` is this process's share; ``device`` the device accelerate gives it (``cuda:k``
    on several GPUs, ``cpu`` otherwise); ``wait()`` is a barrier (a no-op alone).
    """

    def __init__(self) -> None:
        self._state: Any = None
        if launched_world_size() > 1:
            try:
                from accelerate import PartialState
            except ImportError as err:  # pragma: no cover - accelerate is a core dependency
                raise ShardError("several processes need accelerate: pip install accelerate") from err
            import torch

            # without a GPU (or with ACCELERATE_USE_CPU) the processes talk over gloo on the CPU
            cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() == "true" or not torch.cuda.is_available()
            self._state = PartialState(cpu=cpu)
            self.shard = Shard(self._state.process_index, self._state.num_processes)
        else:
            self.shard = Shard()

    @property
    def distributed(self) -> bool:
        return self.shard.count > 1

    def device(self, requested: str) -> str:
        """The device for this process: accelerate's own when several processes share GPUs."""
        if self.distributed and requested.startswith("cuda"):
            return str(self._state.device)
        return requested

    def threads(self, requested: int | None) -> int | None:
        """Torch threads for this process: ``requested``, or with several local processes their
        share of the free cores (so they never oversubscribe them); None means ``auto_threads``."""
        if requested is not None or not self.distributed:
            return requested
        from massshift.lm.loading import auto_threads

        local = int(os.environ.get("LOCAL_WORLD_SIZE", self.shard.count))
        return max(1, auto_threads() // max(1, local))

    def wait(self) -> None:
        if self._state is not None:
            self._state.wait_for_everyone()


@dataclass(frozen=True)
class ChunkPlan:
    """Where the chunks of one score table live (``folder`` is None when nothing is cached)."""

    folder: Path | None
    fingerprint: str
    n_facts: int
    chunk_size: int

    @property
    def n_chunks(self) -> int:
        return -(-self.n_facts // self.chunk_size)

    def bounds(self, chunk: int) -> tuple[int, int]:
        start = chunk * self.chunk_size
        return start, min(start + self.chunk_size, self.n_facts)

    def path(self, chunk: int) -> Path | None:
        return self.folder / f"chunk-{chunk:06d}.parquet" if self.folder is not None else None

    def missing(self, shard: Shard | None = None) -> list[int]:
        """Chunks not on disk yet (all when uncached), limited to ``shard``'s when given."""
        return [i for i in range(self.n_chunks)
                if (shard is None or shard.owns(i)) and (self.folder is None or not self.path(i).exists())]


def write_chunk(path: Path, df: pd.DataFrame, fingerprint: str) -> Path:
    """Write one chunk atomically, its parquet metadata stamped with ``fingerprint``."""
    table = pa.Table.from_pandas(df, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), FINGERPRINT_KEY: fingerprint.encode()})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


def chunk_fingerprint(path: Path) -> str | None:
    """The fingerprint a chunk was stamped with (None for an unstamped, older chunk)."""
    try:
        meta = pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowInvalid) as err:
        raise ShardError(f"{path}: not a readable parquet chunk ({err}); delete it to recompute it") from err
    value = meta.get(FINGERPRINT_KEY)
    return value.decode() if value is not None else None


def check_chunk(path: Path, fingerprint: str) -> None:
    """Refuse a chunk stamped with another fingerprint, naming it."""
    found = chunk_fingerprint(path)
    if found is not None and found != fingerprint:
        raise ShardError(
            f"{path}: this shard was written for fingerprint {found}, not {fingerprint} (other weights, "
            f"settings or facts); it cannot be merged. Delete it to recompute it."
        )


def read_chunk(path: Path, fingerprint: str, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """One chunk as a DataFrame, after checking its fingerprint."""
    check_chunk(path, fingerprint)
    if columns is not None:
        have = set(pq.read_schema(path).names)
        columns = [c for c in columns if c in have]
    return pd.read_parquet(path, columns=columns)


def wait_for_chunks(plan: ChunkPlan, timeout_s: float = 0.0, poll_s: float = 1.0) -> None:
    """Return once every chunk exists; raise ShardError naming the missing ones after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        missing = plan.missing()
        if not missing:
            return
        if time.monotonic() >= deadline:
            shown = ", ".join(str(plan.path(i).name) for i in missing[:5])
            raise ShardError(f"{plan.folder}: {len(missing)} of {plan.n_chunks} chunks missing ({shown}"
                             f"{', ...' if len(missing) > 5 else ''}); rerun to compute them")
        time.sleep(poll_s)


def iter_chunks(plan: ChunkPlan, columns: Sequence[str] | None = None) -> Iterator[pd.DataFrame]:
    """Every chunk in order, fingerprint-checked."""
    for i in range(plan.n_chunks):
        yield read_chunk(plan.path(i), plan.fingerprint, columns)


def pq_columns(plan: ChunkPlan) -> list[str]:
    """The columns of the plan's chunks (read from the first one's schema)."""
    return pq.read_schema(plan.path(0)).names


def merge_chunks(plan: ChunkPlan, out: Path, finish: Any) -> int:
    """Stream every chunk through ``finish`` (a DataFrame -> DataFrame, e.g. adding state
    columns) into ``out``, one parquet row group per chunk; returns the row count.

    The first chunk fixes the schema; a later chunk whose columns cannot be cast to it is
    refused with its name.
    """
    rows = 0
    writer: pq.ParquetWriter | None = None
    with atomic_path(out) as tmp:
        try:
            for i, part in enumerate(iter_chunks(plan)):
                table = pa.Table.from_pandas(finish(part), preserve_index=False)
                if writer is None:
                    schema = table.schema.remove_metadata()
                    writer = pq.ParquetWriter(tmp, schema)
                try:
                    table = table.select(schema.names).cast(schema)
                except (KeyError, pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as err:
                    raise ShardError(f"{plan.path(i)}: its columns do not match the first chunk's ({err})") from err
                writer.write_table(table)
                rows += table.num_rows
        finally:
            if writer is not None:
                writer.close()
    return rows


# ----------------------------------------------------------------------------- where a score table's chunks live
# ``config`` below is a ``score.table.ScoreConfig`` (its ``numbers_key``, ``chunk_size`` and ``distractors``).

def default_cache_root() -> Path:
    """``$MASSSHIFT_CACHE`` or ``~/.cache/massshift`` (``rundir.cache_root``)."""
    return cache_root()


def facts_hash(facts: pd.DataFrame) -> str:
    """A hash of fact ids, questions and answers, in order."""
    h = hashlib.sha256()
    for fid, q, ans in zip(facts["fact_id"], facts["question"], facts["answers"]):
        h.update(json.dumps([str(fid), q, list(ans)], ensure_ascii=False).encode())
    return h.hexdigest()[:16]


def fingerprint(
    model_key: str, config: Any, facts: pd.DataFrame, matcher_name: str = "",
    distractors: Sequence[Sequence[str]] | None = None,
) -> str:
    """A stable key for (weights + tokenizer, settings, facts, and the drawn distractors when any)."""
    content: dict[str, Any] = {"model": model_key, "config": config.numbers_key(), "facts": facts_hash(facts),
                               "matcher": matcher_name, "chunk_size": config.chunk_size}
    if distractors is not None and config.distractors:
        # the draw depends on relations and subjects too, which facts_hash does not cover
        content["distractor_lists"] = hashlib.sha256(
            json.dumps([list(d) for d in distractors], ensure_ascii=False).encode()).hexdigest()[:16]
    payload = json.dumps(content, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def plan_chunks(
    facts: pd.DataFrame, config: Any, model_key: str | None,
    cache_dir: str | os.PathLike[str] | None = None, matcher_name: str = "",
    drawn: Sequence[Sequence[str]] | None = None,
) -> ChunkPlan:
    """Where the chunks of this score table live: ``<cache>/scores/<fingerprint>/`` (no folder when
    ``model_key`` is None, i.e. nothing cached). Writes the folder's meta.json."""
    if model_key is None:
        return ChunkPlan(None, "", len(facts), config.chunk_size)
    fp = fingerprint(model_key, config, facts, matcher_name, drawn)
    folder = Path(cache_dir or default_cache_root()) / "scores" / fp
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "meta.json", {"model_key": model_key, "config": config.numbers_key(),
                                      "n_facts": len(facts), "chunk_size": config.chunk_size})
    return ChunkPlan(folder, fp, len(facts), config.chunk_size)
