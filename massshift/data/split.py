"""Fact-level train/test split and deduplication, with an audit of every decision.

The paper behind massshift trains RL on one set of facts and tests on another
after fact-level deduplication: a test fact must not be answerable by having
seen a train fact. Two facts *overlap* under any of these rules (the names
appear in audits, and the order is the order in which they are checked):

- ``same_triple``: both have subject, relation and object, equal after ``normalize``;
- ``same_question``: equal normalised questions;
- ``subject_answer_overlap``: the same non-empty normalised subject and
  intersecting normalised answer sets (e.g. "Where was X born?" / "Where did X die?"
  both answered "Paris").

``split_facts`` joins overlapping facts into connected components (union-find,
so overlap is closed transitively) and deals whole components to the two sides,
so paraphrases of one fact never straddle the split. ``dedup`` removes from a
given test set every fact that overlaps a train fact. ``verify_disjoint`` checks
the guarantee. Every lookup goes through dict indexes on normalised keys, so
the cost grows with the number of facts, not with the number of pairs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Hashable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from massshift.configio import ConfigIO, help_field
from massshift.data.facts import save_facts
from massshift.data.matching import normalize
from massshift.rundir import init_run_dir, write_csv

logger = logging.getLogger(__name__)

RULES: tuple[str, ...] = ("same_triple", "same_question", "subject_answer_overlap")
"""Overlap rules, in the order they are checked and reported."""

AUDIT_COLUMNS: tuple[str, ...] = ("fact_id", "side", "group_id", "group_size")
DEDUP_AUDIT_COLUMNS: tuple[str, ...] = (
    "removed_fact_id", "removed_question", "train_fact_id", "train_question", "rule",
)


@dataclass(frozen=True)
class SplitConfig(ConfigIO):
    """How ``split_facts`` deals facts to train and test."""

    test_size: float = help_field(0.5, help="The share of facts (not groups) wanted on the test side, in (0, 1).")
    seed: int = help_field(0, help="Seeds the shuffle of overlap groups; same seed, same split.")

    def __post_init__(self) -> None:
        if isinstance(self.test_size, bool) or not isinstance(self.test_size, (int, float)):
            raise ValueError(f"test_size must be a number in (0, 1), e.g. 0.5; got {self.test_size!r}")
        if not 0.0 < float(self.test_size) < 1.0:
            raise ValueError(f"test_size must lie strictly between 0 and 1 (e.g. 0.5), got {self.test_size}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")


@dataclass(frozen=True)
class SplitResult:
    """Train and test facts (original row order) and one audit row per fact."""

    train: pd.DataFrame
    test: pd.DataFrame
    audit: pd.DataFrame  # fact_id, side, group_id, group_size


@dataclass(frozen=True)
class DedupResult:
    """The test facts that survive dedup, and one audit row per removed fact."""

    test: pd.DataFrame
    audit: pd.DataFrame  # removed_fact_id, removed_question, train_fact_id, train_question, rule


@dataclass(frozen=True)
class Overlap:
    """A test fact that overlaps a train fact under ``rule``."""

    test_fact_id: str
    train_fact_id: str
    rule: str


class _Normalizer:
    """``normalize`` with a memo: subjects and relations repeat across many facts."""

    def __init__(self) -> None:
        self._memo: dict[str, str] = {}

    def __call__(self, value: Any) -> str:
        if value is None or not isinstance(value, str):
            return ""
        out = self._memo.get(value)
        if out is None:
            out = self._memo[value] = normalize(value)
        return out


def _fact_keys(df: pd.DataFrame, norm: _Normalizer) -> Iterator[list[tuple[str, Hashable]]]:
    """For each fact, its overlap keys as (rule, key) pairs, in rule order."""
    _check_columns(df)
    n = len(df)
    subjects = df["subject"].tolist() if "subject" in df.columns else [None] * n
    relations = df["relation"].tolist() if "relation" in df.columns else [None] * n
    objects = df["object"].tolist() if "object" in df.columns else [None] * n
    for question, answers, s, r, o in zip(df["question"].tolist(), df["answers"].tolist(),
                                          subjects, relations, objects):
        keys: list[tuple[str, Hashable]] = []
        triple = (norm(s), norm(r), norm(o))
        if all(triple):
            keys.append(("same_triple", triple))
        q = norm(question)
        if q:
            keys.append(("same_question", q))
        subject = triple[0]
        if subject:
            for a in dict.fromkeys(norm(a) for a in answers):
                if a:
                    keys.append(("subject_answer_overlap", (subject, a)))
        yield keys


def _check_columns(df: pd.DataFrame) -> None:
    missing = [c for c in ("fact_id", "question", "answers") if c not in df.columns]
    if missing:
        raise ValueError(f"facts table lacks column(s) {', '.join(missing)}; load it with facts.load_facts")


def _find(parent: list[int], i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]  # path halving
        i = parent[i]
    return i


def overlap_groups(df: pd.DataFrame, group_by: str | None = None) -> np.ndarray:
    """Group id of each fact (row order): connected components of the overlap rules.

    ``group_by`` names a column (e.g. ``subject``) whose equal non-empty values
    also join facts into one group, so that, say, every fact about one person
    lands on one side. Groups are numbered 0, 1, ... in order of their first fact.
    """
    norm = _Normalizer()
    parent = list(range(len(df)))
    first: dict[tuple[str, Hashable], int] = {}
    extra = [None] * len(df)
    if group_by is not None:
        if group_by not in df.columns:
            raise ValueError(f"group_by column {group_by!r} is not in the facts table ({', '.join(df.columns)})")
        extra = [("group_by", str(v)) if isinstance(v, str) and v.strip() else None for v in df[group_by]]
    for i, keys in enumerate(_fact_keys(df, norm)):
        for key in [*keys, *([extra[i]] if extra[i] else [])]:
            j = first.setdefault(key, i)
            if j != i:
                ri, rj = _find(parent, i), _find(parent, j)
                if ri != rj:
                    parent[max(ri, rj)] = min(ri, rj)
    roots = [_find(parent, i) for i in range(len(df))]
    numbering: dict[int, int] = {}
    return np.array([numbering.setdefault(r, len(numbering)) for r in roots], dtype=np.int64)


def split_facts(df: pd.DataFrame, test_size: float = 0.5, seed: int = 0,
                group_by: str | None = None) -> SplitResult:
    """Split facts into train and test so that no test fact overlaps a train fact.

    ``group_by`` (a column such as ``subject``) keeps all facts sharing its value on
    one side, on top of the overlap rules. Overlap groups are shuffled with ``seed`` and dealt greedily: a group goes to
    test when that brings the test count closer to ``round(test_size * n)``, else
    to train. Both sides keep the input's row order.
    """
    config = SplitConfig(test_size=test_size, seed=seed)
    _check_columns(df)
    if df["fact_id"].duplicated().any():
        dup = df.loc[df["fact_id"].duplicated(), "fact_id"].iloc[0]
        raise ValueError(f"duplicate fact_id {dup!r}; fact ids must be unique (facts.load_facts checks this)")
    groups = overlap_groups(df, group_by)
    sizes = np.bincount(groups, minlength=int(groups.max(initial=-1)) + 1)
    target = round(config.test_size * len(df))
    in_test = np.zeros(len(sizes), dtype=bool)
    n_test = 0
    for g in np.random.default_rng(config.seed).permutation(len(sizes)):
        if abs(n_test + sizes[g] - target) < abs(n_test - target):
            in_test[g] = True
            n_test += int(sizes[g])
    test_mask = in_test[groups]
    audit = pd.DataFrame({
        "fact_id": df["fact_id"].astype(str).to_numpy(),
        "side": np.where(test_mask, "test", "train"),
        "group_id": groups,
        "group_size": sizes[groups],
    })
    train = df.loc[~test_mask].reset_index(drop=True)
    test = df.loc[test_mask].reset_index(drop=True)
    logger.info(
        "split %d facts in %d overlap groups (largest %d): %d train, %d test (target %d)",
        len(df), len(sizes), int(sizes.max(initial=0)), len(train), len(test), target,
    )
    if len(df) and (train.empty or test.empty):
        logger.warning("split left one side empty; the overlap groups are too large for test_size=%s",
                       config.test_size)
    return SplitResult(train=train, test=test, audit=audit)


def _train_index(train: pd.DataFrame, norm: _Normalizer) -> dict[tuple[str, Hashable], int]:
    """(rule, key) -> the first train row carrying it."""
    index: dict[tuple[str, Hashable], int] = {}
    for i, keys in enumerate(_fact_keys(train, norm)):
        for key in keys:
            index.setdefault(key, i)
    return index


def _first_overlaps(train: pd.DataFrame, test: pd.DataFrame) -> list[tuple[int, int, str]]:
    """(test row, train row, rule) for each test fact overlapping train: first rule, then first train row."""
    norm = _Normalizer()
    index = _train_index(train, norm)
    found = []
    for t, keys in enumerate(_fact_keys(test, norm)):
        for rule in RULES:
            hits = [index[k] for k in keys if k[0] == rule and k in index]
            if hits:
                found.append((t, min(hits), rule))
                break
    return found


def dedup(train: pd.DataFrame, test: pd.DataFrame) -> DedupResult:
    """Remove from ``test`` every fact that overlaps any ``train`` fact, and say why.

    The audit has one row per removed fact, naming the first rule (in ``RULES``
    order) that matched and the first train fact (in row order) under it.
    """
    found = _first_overlaps(train, test)
    removed = [t for t, _, _ in found]
    audit = pd.DataFrame(
        [(str(test["fact_id"].iat[t]), test["question"].iat[t], str(train["fact_id"].iat[j]),
          train["question"].iat[j], rule) for t, j, rule in found],
        columns=list(DEDUP_AUDIT_COLUMNS),
    )
    keep = np.ones(len(test), dtype=bool)
    keep[np.asarray(removed, dtype=np.int64)] = False
    cleaned = test.loc[keep].reset_index(drop=True)
    logger.info("dedup removed %d of %d test facts (%s)", len(removed), len(test),
                ", ".join(f"{r}: {int((audit['rule'] == r).sum())}" for r in RULES))
    return DedupResult(test=cleaned, audit=audit)


def verify_disjoint(train: pd.DataFrame, test: pd.DataFrame) -> list[Overlap]:
    """One ``Overlap`` per test fact that overlaps a train fact; empty when the split is clean."""
    return [
        Overlap(str(test["fact_id"].iat[t]), str(train["fact_id"].iat[j]), rule)
        for t, j, rule in _first_overlaps(train, test)
    ]


def _config_dict(config: Any) -> dict[str, Any]:
    return asdict(config) if isinstance(config, SplitConfig) else dict(config)


def write_split(result: SplitResult, out_dir: str | os.PathLike[str], config: dict[str, Any]) -> Path:
    """Write ``train.jsonl``, ``test.jsonl``, ``audit.csv``, ``config.yaml`` and ``env.json`` to ``out_dir``."""
    config = _config_dict(config)
    seed = config.get("seed")
    out = init_run_dir(out_dir, config, seed=seed if isinstance(seed, int) else None)
    save_facts(result.train, out / "train.jsonl")
    save_facts(result.test, out / "test.jsonl")
    write_csv(out / "audit.csv", result.audit)
    logger.info("wrote split (%d train, %d test) to %s", len(result.train), len(result.test), out)
    return out


def write_dedup(result: DedupResult, out_dir: str | os.PathLike[str], config: dict[str, Any]) -> Path:
    """Write the cleaned ``test.jsonl``, ``audit.csv``, ``config.yaml`` and ``env.json`` to ``out_dir``."""
    out = init_run_dir(out_dir, _config_dict(config))
    save_facts(result.test, out / "test.jsonl")
    write_csv(out / "audit.csv", result.audit)
    logger.info("wrote dedup (%d kept, %d removed) to %s", len(result.test), len(result.audit), out)
    return out
