"""Distractor answers: other values of the same relation, the chance line of a fact (docs/criteria.md).

When a relation has few possible answers, a fixed probability line cannot tell
recall from guessing: a model that puts 5% on each of 20 cities "knows" every
birth city by the ``logprob`` criterion. The fix is relative: score, with the
same teacher forcing as the gold answer, the answers the model could give
instead, the values of the same relation for other facts, and ask whether the
gold answer beats them (``categories`` criterion ``chance``; the Inside-Out
knowledge score K_q of Gekhman et al. 2025, arXiv 2503.15299).

Rules of :func:`draw_distractors`:

- a fact's **pool** is the first alias of every other fact of the same group,
  deduplicated by normalised form (``matching.normalize``; the first spelling
  seen in facts order is kept), minus every value whose normalised form equals
  a normalised alias of this fact (so a distractor is never a correct answer);
- the **group** is the ``relation`` when the fact has one; otherwise the
  question's **template key** (:func:`template_key`): the normalised question
  with its ``subject`` removed when the subject is given and occurs in it,
  else the normalised question's first 3 words ("what is capital" for "What is
  the capital of France?"). Facts with a relation never share a group with
  facts without one;
- ``k`` distractors are drawn without replacement, seeded per
  ``(seed, fact_id)`` so a subset re-run draws the same ones; a pool of fewer
  than ``k`` values gives all of them (in a seeded order), an empty pool none.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from massshift.data.matching import normalize
from massshift.score import DEFAULT_DISTRACTORS
from massshift.seeds import fact_rng

logger = logging.getLogger(__name__)

TEMPLATE_WORDS = 3
"""Words of the normalised question that make the template key when no subject is given."""


def _missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


def template_key(question: str, subject: Any = None) -> str:
    """The question's template: without its subject when given, else its first 3 normalised words."""
    q = normalize(question)
    if not _missing(subject):
        s = normalize(str(subject))
        if s and f" {s} " in f" {q} ":
            return " ".join(f" {q} ".replace(f" {s} ", " <subject> ", 1).split())
    return " ".join(q.split()[:TEMPLATE_WORDS])


def group_keys(facts: pd.DataFrame) -> list[str]:
    """The distractor group of every fact: ``relation:<relation>`` or ``template:<template key>``."""
    relations = facts["relation"] if "relation" in facts.columns else [None] * len(facts)
    subjects = facts["subject"] if "subject" in facts.columns else [None] * len(facts)
    keys = []
    for q, rel, subj in zip(facts["question"], relations, subjects):
        keys.append(f"relation:{rel}" if not _missing(rel) else f"template:{template_key(str(q), subj)}")
    return keys


def draw_distractors(facts: pd.DataFrame, k: int = DEFAULT_DISTRACTORS, seed: int = 0) -> list[list[str]]:
    """Per fact (in row order), up to ``k`` distractor answers (see the module docstring for the rules).

    ``facts`` needs ``fact_id``, ``question`` and ``answers``; ``relation`` and
    ``subject`` are used when present.
    """
    if isinstance(k, bool) or int(k) != k or k < 0:
        raise ValueError(f"k (distractors per fact) must be an integer >= 0, got {k!r}")
    missing = [c for c in ("fact_id", "question", "answers") if c not in facts.columns]
    if missing:
        raise ValueError(f"draw_distractors needs column(s) {', '.join(missing)}")
    if k == 0:
        return [[] for _ in range(len(facts))]
    keys = group_keys(facts)
    answers = [list(a) for a in facts["answers"]]
    pools: dict[str, dict[str, str]] = {}  # group -> normalised value -> first spelling
    for key, ans in zip(keys, answers):
        if ans:
            form = normalize(str(ans[0]))
            if form:
                pools.setdefault(key, {}).setdefault(form, str(ans[0]))
    pool_lists = {key: (list(p.keys()), list(p.values())) for key, p in pools.items()}
    out: list[list[str]] = []
    n_short = 0
    for fid, key, ans in zip(facts["fact_id"], keys, answers):
        forms, values = pool_lists.get(key, ([], []))
        own = {normalize(str(a)) for a in ans}
        rng = fact_rng(seed, str(fid))
        # drawing k + |aliases| distinct values leaves at least k after removing this fact's own
        # (each alias matches at most one pool entry: the pool is deduplicated by normalised form)
        take = min(len(forms), k + len(own))
        idx = rng.choice(len(forms), size=take, replace=False) if take else []
        drawn = [values[i] for i in idx if forms[i] not in own][:k]
        n_short += len(drawn) < k
        out.append(drawn)
    if n_short:
        logger.info("distractors: %d of %d facts have fewer than %d (small relation or template group)",
                    n_short, len(facts), k)
    return out


def distractor_stats(logp_gold: float, distractor_logps: Sequence[float]) -> dict[str, float]:
    """Gold vs distractors for one fact: ``gold_rank``, ``k_q``, best and median distractor, count.

    - ``gold_rank``: 1 + the number of distractors with a log-prob >= the gold's
      (ties count against the gold, so a -inf gold among -inf distractors is not
      first); 1 means the gold beats every distractor;
    - ``k_q``: the share of (gold, distractor) pairs where the gold scores higher,
      ties counting 0.5 (Gekhman et al. 2025's K_q with one gold answer);
    - ``logp_best_distractor`` and ``logp_median_distractor``: max and median of
      the distractors' summed log-probs;
    - ``n_distractors``: distractors scored (NaN log-probs are left out).

    Without distractors, or with a NaN gold, the rank and K_q are NaN.
    """
    d = np.asarray([x for x in distractor_logps if not math.isnan(x)], dtype=float)
    n = len(d)
    out = {"gold_rank": math.nan, "k_q": math.nan, "logp_best_distractor": math.nan,
           "logp_median_distractor": math.nan, "n_distractors": n}
    if n == 0:
        return out
    out["logp_best_distractor"] = float(d.max())
    out["logp_median_distractor"] = float(np.median(d))
    if not math.isnan(logp_gold):
        out["gold_rank"] = float(1 + int((d >= logp_gold).sum()))
        out["k_q"] = float(((logp_gold > d).sum() + 0.5 * (logp_gold == d).sum()) / n)
    return out


PRIOR_COLUMNS: tuple[str, ...] = ("prior_quantile", "prior_n")
"""Written by :func:`value_prior_columns` (``score_table.finish_table``): the gold's subject specificity."""


class ValuePrior:
    """What the model gives each value for *other* subjects: the value-prior baseline of ``chance``.

    A value is a distractor of many facts of its group (relation, or question template), so the
    score table already holds log p(value | another subject's prompt) many times over. The
    gold of a fact was really recalled, rather than favoured for everybody, when it scores
    higher on its own subject's prompt than on most other subjects' prompts:
    ``prior_quantile`` is the share of those other scores below ``logp_gold`` (ties count
    half), ``prior_n`` how many there were. A fact's own distractors never hold its gold, and
    no fact's distractors hold its own answer, so the pool of a value is other subjects only.

    Memory: one float per scored distractor (``add`` can be fed chunk by chunk).
    """

    def __init__(self) -> None:
        self._pool: dict[tuple[str, str], list[float]] = {}

    def add(self, df: pd.DataFrame) -> None:
        """Pool the distractor scores of these rows (columns ``distractors``, ``distractor_logps``)."""
        for key, values, logps in zip(group_keys(df), df["distractors"], df["distractor_logps"]):
            for value, lp in zip(values, logps):
                if not math.isnan(lp):
                    self._pool.setdefault((key, normalize(str(value))), []).append(float(lp))

    def finish(self) -> None:
        """Sort the pools (after the last ``add``) so each lookup is a binary search."""
        self._sorted = {k: np.sort(np.asarray(v)) for k, v in self._pool.items()}

    def columns(self, df: pd.DataFrame) -> pd.DataFrame:
        """``prior_quantile`` and ``prior_n`` for these rows (their gold aliases pooled; NaN when none)."""
        if not hasattr(self, "_sorted"):
            self.finish()
        quant, count = [], []
        for key, answers, lg in zip(group_keys(df), df["answers"], df["logp_gold"]):
            forms = {normalize(str(a)) for a in answers}
            pools = [self._sorted[(key, f)] for f in forms if (key, f) in self._sorted]
            n = sum(len(p) for p in pools)
            count.append(n)
            if n == 0 or math.isnan(lg):
                quant.append(math.nan)
                continue
            below = sum(np.searchsorted(p, lg, side="left") for p in pools)
            ties = sum(np.searchsorted(p, lg, side="right") for p in pools) - below
            quant.append(float((below + 0.5 * ties) / n))
        return pd.DataFrame({"prior_quantile": quant, "prior_n": count}, index=df.index)


def value_prior_columns(df: pd.DataFrame) -> pd.DataFrame:
    """``prior_quantile`` and ``prior_n`` of every row, pooled over this table (see :class:`ValuePrior`)."""
    prior = ValuePrior()
    prior.add(df)
    return prior.columns(df)
