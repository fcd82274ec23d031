"""Never-seen controls on any model: questions about fabricated subjects (see docs/criteria.md, "Controls").

A control is the question of a real fact with its subject replaced by an invented name, with a gold answer
drawn from the relation's answer pool. No model can know it, so the share of controls a criterion labels
tail-correct is that criterion's false-positive rate on this model, and the share answered greedy-correct is
its guess rate. Controls are scored with everything else and kept out of every accuracy, transition and
gain number (``is_control``).

Names come from the seeded syllable generator of ``data.names``, with as many words as the subject they replace; a name that
normalises to a real subject of the file, or that contains one, is drawn again.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pandas as pd

from massshift.data.matching import normalize
from massshift.data.names import invent_names
from massshift.seeds import derive_seed32

DEFAULT_CONTROLS = 8
"""Controls per relation when the facts allow them and the user gave no count."""
CONTROL_COLUMN = "is_control"
CONTROL_PREFIX = "control:"
"""Control fact ids start with this, so score tables (which keep fact ids, not every facts column) know them."""
def eligible(facts: pd.DataFrame) -> pd.Series:
    """Facts a control can be made from: a subject and a relation, and the subject appears in the question."""
    if "subject" not in facts.columns or "relation" not in facts.columns:
        return pd.Series(False, index=facts.index)
    ok = []
    for q, s, r in zip(facts["question"], facts["subject"], facts["relation"]):
        ok.append(isinstance(s, str) and bool(s.strip()) and isinstance(r, str) and s in str(q))
    return pd.Series(ok, index=facts.index)


def control_facts(facts: pd.DataFrame, n_per_relation: int = DEFAULT_CONTROLS, seed: int = 0) -> pd.DataFrame:
    """``n_per_relation`` control facts for each relation with eligible facts (an empty frame when none).

    Columns: fact_id (``control:...``), question, answers, subject, relation, object (when the facts have it),
    popularity 0 (when they have it), and ``is_control`` True."""
    if n_per_relation < 0:
        raise ValueError(f"the number of controls per relation must be >= 0, got {n_per_relation}")
    ok = eligible(facts)
    if n_per_relation == 0 or not ok.any():
        return pd.DataFrame(columns=["fact_id", "question", "answers", "subject", "relation", CONTROL_COLUMN])
    real = {normalize(str(s)) for s in facts["subject"] if isinstance(s, str)}
    base = facts.loc[ok].reset_index(drop=True)
    rows: list[dict[str, Any]] = []
    for rel, group in base.groupby("relation", sort=True):
        rng = np.random.default_rng(derive_seed32(seed, "controls", rel))
        used: set[str] = set()
        for i in range(n_per_relation):
            template = group.iloc[int(rng.integers(len(group)))]
            gold = group.iloc[int(rng.integers(len(group)))]
            name = _fresh_name(rng, len(str(template["subject"]).split()), real | used)
            used.add(normalize(name))
            question = str(template["question"]).replace(str(template["subject"]), name)
            digest = hashlib.sha256(f"{rel}\x1f{i}\x1f{question}".encode()).hexdigest()[:16]
            row = {"fact_id": f"{CONTROL_PREFIX}{digest}", "question": question, "answers": list(gold["answers"]),
                   "subject": name, "relation": rel, CONTROL_COLUMN: True}
            if "object" in facts.columns:
                row["object"] = gold["object"]
            if "popularity" in facts.columns:
                row["popularity"] = 0
            rows.append(row)
    return pd.DataFrame(rows)


def _fresh_name(rng: np.random.Generator, words: int, taken: set[str]) -> str:
    for _ in range(1000):
        name = " ".join(invent_names(rng, max(1, words), set()))
        norm = normalize(name)
        if norm not in taken and not any(t and f" {t} " in f" {norm} " for t in taken):
            return name
    raise RuntimeError("could not invent a subject name unlike the real ones in 1000 draws")


def with_controls(facts: pd.DataFrame, n_per_relation: int | None = None, seed: int = 0) -> pd.DataFrame:
    """``facts`` with controls appended (``is_control`` False on the real facts). ``None``: the default count
    where the facts allow it, else none."""
    n = DEFAULT_CONTROLS if n_per_relation is None else n_per_relation
    controls = control_facts(facts, n, seed)
    out = facts.copy()
    out[CONTROL_COLUMN] = False
    if len(controls) == 0:
        return out
    return pd.concat([out, controls], ignore_index=True)


def split_controls(table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(real rows, control rows) of a facts or score table, told apart by the fact id's prefix."""
    mask = table["fact_id"].astype(str).str.startswith(CONTROL_PREFIX).to_numpy()
    return table.loc[~mask].reset_index(drop=True), table.loc[mask].reset_index(drop=True)
