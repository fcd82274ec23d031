"""Format diagnostics: in what form does a model answer, and is the scored continuation that form?

Every answer (greedy or sampled) is put in one of four formats, on SQuAD-normalised text
(``matching.normalize``), with the fact's candidates = its aliases + its distractors:

- ``empty``: nothing before the terminator;
- ``hedge``: a refusal or uncertainty phrase ("I don't know", "not sure", "cannot",
  "sorry", ...), or two or more different candidate values named ("Africa, Asia, Europe");
- ``bare``: the answer begins with a candidate span, or has at most ``BARE_WORDS`` words
  ("Havana", "the US dollar", "100");
- ``sentence``: anything else ("The capital of Cuba is Havana.").

``begins_span`` (the answer begins with a candidate span) is kept apart from the format:
it is what the teacher-forced continuation ``" {answer}" + terminator`` assumes.

:func:`format_summary` gives per score table the shares of each format for greedy and
sampled answers, their mean length in words, the share of greedy answers beginning with a
candidate span, and the median p(gold) of greedy-correct facts; :func:`format_warning`
says when the scored continuation is not where the model puts its mass (fewer than half
of greedy answers are bare, i.e. begin with an answer span or are at most three words
long, or that median is below eps) and what to use instead. The short-answer clause keeps
a model that answers a wrong bare value, one that is no fact's candidate, from counting
as verbose. ``categories.auto_criterion`` turns the warning into the choice of criterion.
This module reads score tables only (no torch).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from massshift.data.matching import normalize

FORMATS: tuple[str, ...] = ("bare", "sentence", "hedge", "empty")
FORMAT_COLUMNS: tuple[str, ...] = ("greedy_format", "greedy_begins_span", "greedy_words", "sample_format_shares",
                                   "sample_begins_span", "sample_words")
BARE_WORDS = 3
MIN_BARE = 0.5
_HEDGES = re.compile(
    r"\b(i do not know|i don t know|i dont know|not sure|unsure|cannot|can t|unable|sorry|unknown|"
    r"no information|not certain|i am not|i m not|as an ai|depends)\b"
)


def _norm_candidates(candidates: Sequence[str]) -> list[str]:
    return [c for c in dict.fromkeys(normalize(str(c)) for c in candidates) if c]


def _starts(text: str, cand: str) -> bool:
    return text == cand or text.startswith(cand + " ")


def _named(text: str, cands: list[str]) -> int:
    padded = f" {text} "
    return sum(f" {c} " in padded for c in cands)


def classify(answer: str, answers: Sequence[str], distractors: Sequence[str] = ()) -> tuple[str, bool]:
    """The format of one answer (``FORMATS``) and whether it begins with a candidate span."""
    text = normalize(answer)
    if not text:
        return "empty", False
    golds, others = _norm_candidates(answers), _norm_candidates(distractors)
    begins = any(_starts(text, c) for c in golds + others)
    # distinct values named: the gold counts once however many of its aliases appear
    values = (1 if _named(text, golds) else 0) + _named(text, [c for c in others if c not in golds])
    if _HEDGES.search(text) or values >= 2:
        return "hedge", begins
    if begins or len(text.split()) <= BARE_WORDS:
        return "bare", begins
    return "sentence", begins


def _distractors(row: Any) -> list[str]:
    d = row.get("distractors") if hasattr(row, "get") else None
    return [] if d is None or (isinstance(d, float) and math.isnan(d)) else [str(x) for x in d]


def format_columns(table: pd.DataFrame) -> pd.DataFrame:
    """Per-fact format columns of a score table: ``greedy_format``, ``greedy_begins_span``,
    ``greedy_words``, and over the samples ``sample_format_shares`` (JSON: format -> share),
    ``sample_begins_span`` and ``sample_words`` (means)."""
    rows = []
    for rec in table.to_dict("records"):
        answers, dis = list(rec["answers"]), _distractors(rec)
        fmt, begins = classify(str(rec["greedy"]), answers, dis)
        counts = json.loads(rec["sample_answers"]) if isinstance(rec.get("sample_answers"), str) else {}
        counts = {k: v for k, v in counts.items() if v and v > 0}
        total = sum(counts.values())
        shares = dict.fromkeys(FORMATS, 0.0)
        s_begins = s_words = 0.0
        for text, n in counts.items():
            f, b = classify(text, answers, dis)
            shares[f] += n / total
            s_begins += b * n / total
            s_words += len(text.split()) * n / total
        rows.append({"greedy_format": fmt, "greedy_begins_span": begins,
                     "greedy_words": len(normalize(str(rec["greedy"])).split()),
                     "sample_format_shares": json.dumps(shares) if total else "",
                     "sample_begins_span": s_begins if total else math.nan,
                     "sample_words": s_words if total else math.nan})
    return pd.DataFrame(rows, index=table.index)


class FormatTally:
    """:func:`format_summary` over a table fed in chunks: the same numbers as on the whole table,
    holding only counts and the log-probs of greedy-correct facts (for their median)."""

    def __init__(self) -> None:
        self.n = self.begins = self.n_gc = self.prefixed = self.n_parsed = self.n_s_words = self.n_s_begins = 0
        self.greedy = dict.fromkeys(FORMATS, 0)
        self.sampled = dict.fromkeys(FORMATS, 0.0)
        self.words = self.s_words = self.s_begins = 0.0
        self.gc_logps: list[float] = []

    def add(self, table: pd.DataFrame) -> None:
        """Count one chunk (format columns computed if missing)."""
        ready = "greedy_format" in table.columns and bool(table["greedy_format"].notna().all())
        if ready:
            cols = table
        else:  # tables from older caches lack the columns, or have them for some chunks only
            cols = pd.concat([table.drop(columns=[c for c in FORMAT_COLUMNS if c in table.columns]),
                              format_columns(table)], axis=1)
        self.n += len(cols)
        for f in FORMATS:
            self.greedy[f] += int((cols["greedy_format"] == f).sum())
        for text in cols["sample_format_shares"]:
            if isinstance(text, str) and text:
                shares = json.loads(text)
                self.n_parsed += 1
                for f in FORMATS:
                    self.sampled[f] += shares[f]
        self.words += float(cols["greedy_words"].sum())
        self.begins += int(cols["greedy_begins_span"].astype(bool).sum())
        for attr, col in (("s_words", "sample_words"), ("s_begins", "sample_begins_span")):
            values = cols[col].to_numpy(dtype=float)
            values = values[~np.isnan(values)]
            setattr(self, attr, getattr(self, attr) + float(values.sum()))
            setattr(self, f"n_{attr}", getattr(self, f"n_{attr}") + len(values))
        gc = cols["greedy_correct"].astype(bool).to_numpy()
        self.n_gc += int(gc.sum())
        logps = cols.loc[gc, "logp_gold"].to_numpy(dtype=float)
        self.gc_logps.extend(logps[np.isfinite(logps)].tolist())
        if "answer_prefix" in cols.columns:
            self.prefixed += int((cols["answer_prefix"].fillna("").astype(str) != "").sum())

    def summary(self, eps: float | None = None) -> dict[str, Any]:
        """The format summary of everything added (see :func:`format_summary`)."""
        parsed = self.n_parsed > 0
        out = {
            "n_facts": self.n,
            "greedy": {f: self.greedy[f] / self.n if self.n else math.nan for f in FORMATS},
            "sampled": {f: self.sampled[f] / self.n_parsed for f in FORMATS} if parsed else None,
            "greedy_mean_words": self.words / self.n if self.n else math.nan,
            "sampled_mean_words": self.s_words / self.n_s_words if parsed and self.n_s_words else None,
            "greedy_begins_span": self.begins / self.n if self.n else math.nan,
            "sampled_begins_span": self.s_begins / self.n_s_begins if parsed and self.n_s_begins else None,
            "n_greedy_correct": self.n_gc,
            "median_p_gold_greedy_correct": float(np.exp(np.median(self.gc_logps))) if self.gc_logps else None,
            "prefix": "prefix" if self.n and self.prefixed / self.n >= 0.5 else "none",
        }
        if eps is not None:
            out["warning"] = format_warning(out, eps)
        return out


def format_summary(table: pd.DataFrame, eps: float | None = None) -> dict[str, Any]:
    """Format shares and lengths of one score table (format columns computed if missing)."""
    tally = FormatTally()
    tally.add(table)
    return tally.summary(eps)


def format_warning(summary: dict[str, Any], eps: float) -> str | None:
    """The warning text when the scored continuation is not where the model puts its mass, else None."""
    reasons = []
    if summary["greedy"]["bare"] < MIN_BARE:
        reasons.append(f"only {100 * summary['greedy']['bare']:.0f}% of greedy answers are bare answers (begin "
                       f"with an answer span or have at most {BARE_WORDS} words)")
    med = summary.get("median_p_gold_greedy_correct")
    if med is not None and med < eps:
        reasons.append(f"the median p(gold) of greedy-correct facts is {med:.2g} < eps = {eps:.3g}")
    if not reasons:
        return None
    fmt = summary["greedy"]
    return (
        "the scored continuation is not where the model puts its mass: " + "; ".join(reasons)
        + f" (greedy answers: {100 * fmt['sentence']:.0f}% sentences, {100 * fmt['bare']:.0f}% bare, "
        f"{100 * fmt['hedge']:.0f}% hedges, {100 * fmt['empty']:.0f}% empty). p(gold) and the logprob states "
        "describe a format the model does not use: score after an answer prefix (--answer-prefix self, or "
        "per-relation templates with --answer-prefix @prefixes.yaml), match with --match contains, and read "
        "the sampling (or, under a prefix with distractors, chance) states."
    )


def format_shift(base: dict[str, Any], rl: dict[str, Any]) -> dict[str, float]:
    """Change of the greedy format shares and begins-span share from base to RL (RL minus base)."""
    out = {f"greedy_{f}": rl["greedy"][f] - base["greedy"][f] for f in FORMATS}
    out["greedy_begins_span"] = rl["greedy_begins_span"] - base["greedy_begins_span"]
    out["greedy_mean_words"] = rl["greedy_mean_words"] - base["greedy_mean_words"]
    return out


def format_line(label: str, s: dict[str, Any]) -> str:
    """One readable line of a format summary (for logs and report.md)."""
    g = s["greedy"]
    text = (f"{label}: greedy {100 * g['bare']:.0f}% bare, {100 * g['sentence']:.0f}% sentences, "
            f"{100 * g['hedge']:.0f}% hedges, {100 * g['empty']:.0f}% empty, {s['greedy_mean_words']:.1f} words on "
            f"average, {100 * s['greedy_begins_span']:.0f}% begin with an answer span")
    if s.get("sampled"):
        p = s["sampled"]
        text += (f"; samples {100 * p['bare']:.0f}% bare, {100 * p['sentence']:.0f}% sentences, "
                 f"{100 * p['hedge']:.0f}% hedges, {100 * p['empty']:.0f}% empty, {s['sampled_mean_words']:.1f} words")
    med = s.get("median_p_gold_greedy_correct")
    if med is not None:
        text += f"; median p(gold) of greedy-correct facts {med:.3g}"
    return text
