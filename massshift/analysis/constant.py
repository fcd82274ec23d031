"""The constant-answer baseline: answer every question of a relation with that relation's most common value.

It is the line an RL gain must clear before anyone calls it knowledge: on a relation with five values, the
most common one can already be right for a fifth of the subjects. The most common value is counted among
training facts when they are given, else leave-one-out over the test facts themselves (each test fact gets
the most common value among the *other* test facts of its relation). Ties go to the alphabetically first
value, so the baseline is deterministic. A fact's value is its ``object`` when given, else its first alias
(``answers.fact_value``); the answer is judged with the same matcher as the models' answers.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pandas as pd

from massshift.analysis.answers import fact_value
from massshift.analysis.estimators import Bootstrap
from massshift.data.matching import MatchMode, is_correct


def _values(facts: pd.DataFrame) -> list[str]:
    objects = facts["object"] if "object" in facts.columns else [None] * len(facts)
    return [fact_value(a, o) for a, o in zip(facts["answers"], objects)]


def _most_common(counts: Counter[str]) -> str | None:
    best = [v for v, c in counts.items() if c > 0]
    if not best:
        return None
    return min(best, key=lambda v: (-counts[v], v))


def constant_answers(test: pd.DataFrame, train: pd.DataFrame | None = None) -> list[str | None]:
    """Per test fact, the constant answer of its relation (None where the relation has no other fact)."""
    if "relation" not in test.columns:
        raise ValueError("the constant-answer baseline needs a relation column in the facts")
    rel = test["relation"].astype(str).to_numpy()
    if train is not None:
        if "relation" not in train.columns:
            raise ValueError("the constant-answer baseline needs a relation column in the training facts")
        pools: dict[str, Counter[str]] = {}
        for r, v in zip(train["relation"].astype(str), _values(train)):
            pools.setdefault(r, Counter())[v] += 1
        table = {r: _most_common(c) for r, c in pools.items()}
        return [table.get(r) for r in rel]
    values = _values(test)
    pools = {}
    for r, v in zip(rel, values):
        pools.setdefault(r, Counter())[v] += 1
    out = []
    for r, v in zip(rel, values):
        counts = pools[r].copy()
        counts[v] -= 1  # leave this fact out
        out.append(_most_common(counts))
    return out


def constant_baseline(test: pd.DataFrame, train: pd.DataFrame | None = None, mode: MatchMode = "exact",
                      max_words: int = 12, boot: Bootstrap | None = None) -> dict[str, Any]:
    """Accuracy of the constant answer per relation and overall (with a bootstrap CI when ``boot`` is given).

    ``boot`` must resample ``len(test)`` facts (the compare's paired bootstrap, so the CI pairs with the
    models' accuracies)."""
    answers = constant_answers(test, train)
    correct = np.array([a is not None and is_correct(a, gold, mode=mode, max_words=max_words)
                        for a, gold in zip(answers, test["answers"])], dtype=float)
    acc: dict[str, Any] = {"value": float(correct.mean()) if len(correct) else float("nan"), "ci": None}
    if boot is not None and len(correct):
        acc = boot.estimate(lambda idx: correct[idx].mean(axis=1))
    per = []
    for r, idx in test.groupby(test["relation"].astype(str), sort=True).indices.items():
        chosen = Counter(a for a in (answers[i] for i in idx) if a is not None)
        per.append({"relation": str(r), "n": int(len(idx)), "accuracy": float(correct[idx].mean()),
                    "answer": _most_common(chosen)})
    return {"source": "train" if train is not None else "leave-one-out", "n": int(len(test)),
            "accuracy": acc, "per_relation": per}
