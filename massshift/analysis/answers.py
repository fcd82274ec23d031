"""What a model's answers name: the value of the relation each answer names, answer diversity per relation,
evasions and collapse (see docs/criteria.md, "What kind of gain").

A model that answers in sentences gives a different string to every subject even when it names one value,
so diversity is counted on the *value an answer names*: the value of the relation whose alias appears as a
whole-word span of the normalised answer (the first one, the longest at that position), the same span rule
as ``contains`` matching and the anti-hedging rule. An answer that names no value of its relation is an
*evasion* (value ``None``). A model *collapses* on a relation when one value goes to at least
``COLLAPSE_SHARE`` of the relation's subjects.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from massshift.data.matching import normalize

COLLAPSE_SHARE = 0.5
"""One value named for at least this share of a relation's subjects is a collapse (a constant answer)."""
MIN_COLLAPSE_SUBJECTS = 4
"""Relations with fewer subjects are never called collapsed (two of three is not a pattern)."""


def fact_value(answers: Sequence[str], obj: Any = None) -> str:
    """The value a fact's gold stands for: its ``object`` when given, else its first alias."""
    if isinstance(obj, str) and obj.strip():
        return obj
    return str(list(answers)[0])


@dataclass(frozen=True)
class ValueIndex:
    """The values of one relation and their normalised aliases, longest alias first."""

    aliases: tuple[tuple[str, str], ...]  # (normalised alias, value)

    @classmethod
    def build(cls, answer_lists: Iterable[Sequence[str]], objects: Iterable[Any] | None = None) -> ValueIndex:
        seen: dict[str, str] = {}
        objs = list(objects) if objects is not None else None
        for i, answers in enumerate(answer_lists):
            value = fact_value(answers, objs[i] if objs is not None else None)
            for alias in [value, *answers]:
                norm = normalize(str(alias))
                if norm and norm not in seen:
                    seen[norm] = value
        return cls(tuple(sorted(seen.items(), key=lambda kv: (-len(kv[0]), kv[0]))))

    def named(self, answer: Any) -> str | None:
        """The value ``answer`` names (first span, longest at that position), or None (an evasion)."""
        if not isinstance(answer, str):
            return None
        text = f" {normalize(answer)} "
        best: tuple[int, int, str] | None = None  # (position, -length, value)
        for alias, value in self.aliases:
            pos = text.find(f" {alias} ")
            if pos >= 0 and (best is None or (pos, -len(alias)) < best[:2]):
                best = (pos, -len(alias), value)
        return best[2] if best is not None else None


def relation_groups(merged: pd.DataFrame) -> pd.Series | None:
    """Each fact's relation, or None when the table names no relation (the per-relation tests cannot run)."""
    if "relation" not in merged.columns:
        return None
    rel = merged["relation"]
    if rel.isna().all():
        return None
    return rel.fillna("(none)").astype(str)


def named_values(merged: pd.DataFrame, column: str) -> pd.Series:
    """The value each row's ``column`` answer names, within its own relation's values (None: names none).
    Without relations every fact's gold counts as one pool."""
    rel = relation_groups(merged)
    groups = rel if rel is not None else pd.Series("(all)", index=merged.index)
    objects = merged["object"] if "object" in merged.columns else pd.Series([None] * len(merged), index=merged.index)
    out = pd.Series([None] * len(merged), index=merged.index, dtype=object)
    for _, idx in groups.groupby(groups, sort=True).groups.items():
        index = ValueIndex.build(merged.loc[idx, "answers"], objects.loc[idx])
        out.loc[idx] = [index.named(a) for a in merged.loc[idx, column]]
    return out


def diversity(merged: pd.DataFrame, column: str) -> list[dict[str, Any]]:
    """Per relation: subjects, distinct named values, distinct per subject, the most common value and its
    share of all subjects, evasions (answers naming no value), and whether the model collapsed."""
    rel = relation_groups(merged)
    if rel is None:
        return []
    values = named_values(merged, column)
    rows = []
    for name, idx in rel.groupby(rel, sort=True).groups.items():
        vals = values.loc[idx]
        n = len(vals)
        counts = Counter(v for v in vals if v is not None)
        top, top_n = (min(counts.items(), key=lambda kv: (-kv[1], kv[0])) if counts else (None, 0))
        share = top_n / n if n else 0.0
        rows.append({
            "relation": str(name), "n_subjects": n, "distinct_values": len(counts),
            "distinct_per_subject": len(counts) / n if n else float("nan"),
            "top_value": top, "top_count": int(top_n), "top_share": share,
            "evasions": int(sum(v is None for v in vals)), "evasion_share": float(sum(v is None for v in vals)) / n,
            "collapsed": bool(n >= MIN_COLLAPSE_SUBJECTS and share >= COLLAPSE_SHARE),
        })
    return rows


def collapse_values(rows: Sequence[dict[str, Any]]) -> dict[str, str]:
    """relation -> the value a collapsed model gives to most of its subjects."""
    return {r["relation"]: r["top_value"] for r in rows if r["collapsed"]}


def collapse_warning(label: str, rows: Sequence[dict[str, Any]]) -> str | None:
    """One sentence naming every relation on which ``label`` gives one value to most subjects."""
    hits = [r for r in rows if r["collapsed"]]
    if not hits:
        return None
    parts = "; ".join(f"{r['relation']}: {r['top_value']!r} to {r['top_count']} of {r['n_subjects']}" for r in hits)
    return (f"{label} gives one answer to most subjects of {len(hits)} relation(s) ({parts}): its correct "
            "answers there are a constant guess, not recall")
