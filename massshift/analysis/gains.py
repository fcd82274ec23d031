"""What kind of gain: every fact RL made greedy-correct is ``format``, ``guess``, ``recall`` or ``acquisition``
(see docs/criteria.md, "What kind of gain").

A state transition says where a newly correct fact came from, not why it is correct now. Each gain gets
one kind, decided in this order:

1. ``format``: the base's greedy answer already named a gold alias as a whole-word span (and no other value
   of the relation) but was judged wrong (too long, or ``exact`` matching): RL changed the form.
2. ``guess``: RL's correct answer is not specific to the subject: RL names the same value for at least
   ``answers.COLLAPSE_SHARE`` of the relation's subjects, or the value-prior test on the RL table fails
   (``prior_quantile`` below ``chance_specificity`` where at least ``MIN_PRIOR`` scores exist).
3. ``recall``: the base held the fact (tail-correct under the report's criterion), RL's answer is specific.
4. ``acquisition``: absent in the base, specific in RL.

Facts RL lost (greedy-correct in the base only) get the mirror: ``format`` (RL still names the gold),
``constant`` (RL gives them its collapsed value), ``evasion`` (RL names no value), else ``other``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from massshift.analysis.answers import COLLAPSE_SHARE, MIN_COLLAPSE_SUBJECTS, named_values, relation_groups
from massshift.analysis.estimators import Bootstrap
from massshift.analysis.states import MIN_PRIOR
from massshift.data.matching import is_correct, relation_values

GAIN_KINDS: tuple[str, ...] = ("format", "guess", "recall", "acquisition")
LOSS_KINDS: tuple[str, ...] = ("format", "constant", "evasion", "other")
_NO_LIMIT = 10**9


def _names_gold(answer: Any, answers: Sequence[str], others: Sequence[str]) -> bool:
    return isinstance(answer, str) and is_correct(answer, answers, mode="contains", max_words=_NO_LIMIT,
                                                  distractors=others)


def _other_values(merged: pd.DataFrame) -> list[list[str]]:
    if relation_groups(merged) is None:
        return [[] for _ in range(len(merged))]
    values = relation_values(merged.assign(relation=relation_groups(merged)))
    return [values.get(tuple(a), []) for a in merged["answers"]]


def _crowded(merged: pd.DataFrame, values: pd.Series) -> np.ndarray:
    """Per fact: its named value goes to at least COLLAPSE_SHARE of its relation's subjects."""
    rel = relation_groups(merged)
    out = np.zeros(len(merged), dtype=bool)
    if rel is None:
        return out
    frame = pd.DataFrame({"rel": rel.to_numpy(), "value": values.to_numpy()})
    size = frame.groupby("rel")["rel"].transform("size").to_numpy()
    same = frame.groupby(["rel", "value"], dropna=True)["rel"].transform("size")
    same = same.reindex(frame.index).fillna(0).to_numpy()
    named = frame["value"].notna().to_numpy()
    return named & (size >= MIN_COLLAPSE_SUBJECTS) & (same >= COLLAPSE_SHARE * size)


def _prior_fails(merged: pd.DataFrame, specificity: float) -> np.ndarray | None:
    if "prior_quantile_rl" not in merged.columns or "prior_n_rl" not in merged.columns or specificity == 0:
        return None
    q = pd.to_numeric(merged["prior_quantile_rl"], errors="coerce").to_numpy(dtype=float)
    n = pd.to_numeric(merged["prior_n_rl"], errors="coerce").fillna(0).to_numpy()
    return (n >= MIN_PRIOR) & np.isfinite(q) & (q < specificity)


def gain_kinds(merged: pd.DataFrame, base_states: Sequence[str], chance_specificity: float = 0.95
               ) -> tuple[pd.Series, pd.Series, dict[str, bool]]:
    """Kinds of the gained and of the lost facts of a merged base/RL table (None elsewhere), and which
    tests could run (``collapse`` needs relations, ``prior`` needs the RL table's value-prior columns)."""
    base_ok = merged["greedy_correct_base"].astype(bool).to_numpy()
    rl_ok = merged["greedy_correct_rl"].astype(bool).to_numpy()
    others = _other_values(merged)
    base_gold = np.array([_names_gold(g, a, o) for g, a, o in zip(merged["greedy_base"], merged["answers"], others)])
    rl_gold = np.array([_names_gold(g, a, o) for g, a, o in zip(merged["greedy_rl"], merged["answers"], others)])
    rl_values = named_values(merged, "greedy_rl")
    crowded = _crowded(merged, rl_values)
    prior = _prior_fails(merged, chance_specificity)
    guess = crowded | (prior if prior is not None else False)
    states = np.asarray(base_states, dtype=object)

    gain = np.full(len(merged), None, dtype=object)
    gained = ~base_ok & rl_ok
    gain[gained] = np.where(base_gold, "format", np.where(guess, "guess", np.where(
        states == "tail-correct", "recall", "acquisition")))[gained]
    loss = np.full(len(merged), None, dtype=object)
    lost = base_ok & ~rl_ok
    loss[lost] = np.where(rl_gold, "format", np.where(crowded, "constant", np.where(
        rl_values.isna().to_numpy(), "evasion", "other")))[lost]
    tests = {"format": True, "collapse": relation_groups(merged) is not None, "prior": prior is not None}
    return (pd.Series(gain, index=merged.index, name="gain_kind", dtype=object),
            pd.Series(loss, index=merged.index, name="loss_kind", dtype=object), tests)


def decompose(merged: pd.DataFrame, gain: pd.Series, loss: pd.Series, tests: dict[str, bool],
              boot: Bootstrap) -> dict[str, Any]:
    """summary.json's ``gain_decomposition``: counts, shares of the gains with bootstrap CIs, per relation,
    the gains that were a base evasion, and the losses by kind."""
    kinds = gain.to_numpy(dtype=object)
    gained = pd.notna(kinds)
    masks = np.stack([kinds == k for k in GAIN_KINDS], axis=1)  # (facts, kinds)

    def shares(idx: np.ndarray) -> np.ndarray:  # idx: (resamples, facts)
        g = gained[idx].sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return masks[idx].sum(axis=1) / g[:, None]

    point, (lo, hi) = boot.point(shares), boot.interval(boot.replicates(shares))
    n_gained = int(gained.sum())
    base_evasion = named_values(merged, "greedy_base").isna().to_numpy()
    out: dict[str, Any] = {
        "n_gained": n_gained, "tests": tests,
        "kinds": {k: {"count": int(masks[:, i].sum()),
                      "share": None if n_gained == 0 else float(point[i]),
                      "ci": None if n_gained == 0 else [float(lo[i]), float(hi[i])],
                      "from_base_evasion": int((masks[:, i] & base_evasion).sum())}
                  for i, k in enumerate(GAIN_KINDS)},
        "losses": {k: int((loss.to_numpy(dtype=object) == k).sum()) for k in LOSS_KINDS},
        "n_lost": int(loss.notna().sum()),
    }
    rel = relation_groups(merged)
    if rel is not None:
        frame = pd.DataFrame({"relation": rel.to_numpy(), "kind": kinds})
        out["per_relation"] = [
            {"relation": str(r), "n_facts": int(len(g)), **{k: int((g["kind"] == k).sum()) for k in GAIN_KINDS}}
            for r, g in frame.groupby("relation", sort=True)]
    return out


def gain_sentence(decomp: dict[str, Any], base: str = "base", rl: str = "rl") -> str:
    """The verdict's sentence: what the newly greedy-correct facts are made of."""
    n = decomp["n_gained"]
    if n == 0:
        return f"No fact became greedy-correct under {rl}."
    k = decomp["kinds"]
    parts = [f"{k[name]['count']} {name}" for name in GAIN_KINDS if k[name]["count"]]
    main = max(GAIN_KINDS, key=lambda name: k[name]["count"])  # ties: the earlier kind
    count = k[main]["count"]
    lead = "most of the gain is" if 2 * count > n else f"no kind is a majority; the largest ({count} of {n}) is"
    reading = lead + " " + {
        "guess": f"{rl} giving one value to many subjects, not knowledge of this subject",
        "format": f"{rl} changing the form of answers {base} already gave",
        "recall": f"recall of facts {base} held in its tail",
        "acquisition": f"facts {base} did not hold (absent), answered specifically by {rl}",
    }[main]
    missing = [t for t, ran in decomp["tests"].items() if not ran]
    note = f" (not run: the {' and '.join(missing)} test{'s' if len(missing) > 1 else ''})" if missing else ""
    return f"Of {n} newly greedy-correct facts: {', '.join(parts)}{note}; {reading}."


def knowledge_summary(merged: pd.DataFrame, base_states: Sequence[str], boot: Bootstrap, *, base: str = "base",
                      rl: str = "rl", chance_specificity: float = 0.95, train: pd.DataFrame | None = None,
                      match_mode: str = "exact", max_words: int = 12) -> tuple[dict[str, Any], pd.Series, pd.Series]:
    """Everything compare reports on what the gain is made of: ``gain_decomposition``, ``diversity`` of
    both models with ``collapse`` warnings, and the ``constant_baseline``; plus the per-fact gain and loss
    kinds for facts.parquet."""
    from massshift.analysis.answers import collapse_warning, diversity
    from massshift.analysis.constant import constant_baseline

    gain, loss, tests = gain_kinds(merged, base_states, chance_specificity)
    div = {base: diversity(merged, "greedy_base"), rl: diversity(merged, "greedy_rl")}
    warnings = [w for label, rows in div.items() if (w := collapse_warning(label, rows))]
    out: dict[str, Any] = {"gain_decomposition": decompose(merged, gain, loss, tests, boot),
                           "diversity": div, "collapse_warnings": warnings}
    if relation_groups(merged) is not None:
        facts = merged.assign(relation=relation_groups(merged))
        out["constant_baseline"] = constant_baseline(facts, train, mode=match_mode,  # type: ignore[arg-type]
                                                     max_words=max_words, boot=boot)
    else:
        out["constant_baseline"] = None
    return out, gain, loss
