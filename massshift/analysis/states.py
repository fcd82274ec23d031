"""The state rules: greedy-correct, tail-correct or absent, for one fact under one model.

A fact is

- *greedy-correct* when the model's greedy answer is correct;
- *tail-correct* when it is not, but the correct answer is accessible: its
  probability p(gold) is at least ``eps`` (criterion ``logprob``), at least one
  of the model's n samples is correct (criterion ``sampling``), or p(gold) is at
  least ``eps`` and the gold beats the fact's distractors by a margin
  (criterion ``chance``, below);
- *absent* otherwise.

The default criterion is ``auto``: ``chance`` when the score table has the
distractor columns (``schema.DISTRACTOR_COLUMNS``), else ``logprob``; when the
format diagnostics warn that the model does not answer in the scored form
(``formats``), ``sampling`` instead, or ``chance`` under an answer prefix with
distractors (``auto_criterion``).

Criterion ``chance`` (docs/criteria.md). A fixed line cannot tell recall
from guessing when a relation has few values: a model that spreads its mass
over the 20 birth cities it has seen gives every one of them p >= eps, so the
``logprob`` criterion calls every birth city "known", including those of
people it never read about. The chance line is relative instead: the same
teacher forcing scores distractors, the answers of other facts of the same
relation (``massshift.score.distractors``), and the gold must stand out from them.
A fact is tail-correct under ``chance`` when it is not greedy-correct and

1. ``logp_gold >= log(eps)`` (it is reachable by sampling at all);
2. ``gold_rank <= ceil(chance_top * (n_distractors + 1))``: the gold is in the
   top quarter (default) of gold + distractors; and
3. ``logp_gold >= logp_median_distractor + log(chance_ratio)``: the gold is at
   least ``chance_ratio`` (default 2) times as likely as the typical other value;
4. ``prior_quantile >= chance_specificity`` (default 0.95): the gold scores higher
   on this subject's prompt than on 95% of the other subjects' prompts of the same
   relation where it was scored as a distractor (the value-prior baseline,
   ``score.distractors.ValuePrior``). Applied when at least ``MIN_PRIOR`` (10) such scores
   exist; with fewer (large answer pools, small tables) the fact is judged by 1-3
   alone and ``prior_n`` says so.

Why relative: the line is what the model gives *other values of the same
relation* for the same question, so spreading mass over the relation's
values (guessing) does not count as knowing, however many values there are:
a uniform guess over 20 cities gives every city p = 0.05 >= eps but puts the
gold at the median of its distractors, failing (2) and (3). Rules 1-3 cannot
remove a prior that favours one value for everybody: a fact whose gold is that
value passes them. Rule 4 does: a value the model gives everybody scores as high
on other subjects' prompts, so its quantile is near 0.5 however popular it is.
Under it, a subject the model never read about passes with probability about
1 - chance_specificity (the other subjects are its null distribution); what it does
on the demo world is measured in docs/criteria.md. The never-seen control
(``analysis.exposure``: facts with popularity 0) measures the rest, and the report
shows it per criterion. A fact with no distractor (its relation or template group has
one value) has no chance line and is never tail-correct under ``chance``.

The default threshold is ``eps = -ln(alpha) / n`` (n = 128, alpha = 0.05, so
eps is about 0.0234): an answer with at least this probability appears in n
independent samples with probability ``1 - (1 - eps)^n >= 1 - alpha``. This is
the threshold of Wu et al. 2025 ("The Invisible Leash", arXiv 2507.14843), with
their sample budget k replaced by the n = 128 samples of the paper massshift
reproduces (arXiv 2605.07153).

The comparison is made in log space, ``logp_gold >= log(eps)``, so a log-prob
exactly at ``log(eps)`` is tail-correct. A log-prob of ``-inf`` or ``NaN`` is
never tail-correct under ``logprob``; such rows are kept, and ``stats`` reports
how many there are.

This module also offers the SliCK knowledge classes (Gekhman et al. 2024,
arXiv 2405.05904), see :func:`slick_class`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from massshift.configio import help_field
from massshift.score.schema import DISTRACTOR_COLUMNS, STATES, ScoreTableError

logger = logging.getLogger(__name__)

GREEDY, TAIL, ABSENT = STATES
CRITERIA: tuple[str, ...] = ("logprob", "sampling", "chance")
"""The concrete criteria, in the order of every table; ``auto`` resolves to ``chance`` or ``logprob``."""
SLICK_CLASSES: tuple[str, ...] = ("HighlyKnown", "MaybeKnown", "WeaklyKnown", "Unknown")


@dataclass(frozen=True)
class StateConfig:
    """How facts are sorted into states (docs/criteria.md)."""

    criterion: str = help_field("auto", help=(
        "State criterion: 'auto' (chance when the tables have distractor columns, else logprob), 'logprob' "
        "(p(gold) >= eps), 'sampling' (at least one correct sample) or 'chance' (p(gold) >= eps and the gold "
        "beats its distractors)."))
    n: int = help_field(128, help="Sample budget that defines the default threshold eps = -ln(alpha)/n.")
    alpha: float = help_field(0.05, help="Miss probability that defines the default threshold eps = -ln(alpha)/n.")
    eps: float | None = help_field(None, help="Explicit probability threshold in (0, 1]; unset: -ln(alpha)/n.")
    chance_ratio: float = help_field(2.0, help=(
        "chance criterion: p(gold) must be at least this many times the median distractor's probability (> 0)."))
    chance_top: float = help_field(0.25, help=(
        "chance criterion: the gold must rank within this top share of gold + distractors, in (0, 1]."))
    chance_specificity: float = help_field(0.95, help=(
        "chance criterion: the gold's prior_quantile (its score against the same value on other subjects' "
        "prompts) must be at least this, in [0, 1); 0 turns the value-prior test off."))

    def __post_init__(self) -> None:
        if self.criterion not in (*CRITERIA, "auto"):
            raise ValueError(
                f"StateConfig.criterion must be one of {(*CRITERIA, 'auto')}, got {self.criterion!r}; "
                "use 'logprob' for p(gold) >= eps, 'sampling' for at least one correct sample, 'chance' "
                "for beating the distractors, or 'auto' (chance when distractors were scored, else logprob)."
            )
        if not (float(self.chance_ratio) > 0.0 and math.isfinite(float(self.chance_ratio))):
            raise ValueError(f"StateConfig.chance_ratio must be a finite number > 0 (e.g. 2), got {self.chance_ratio!r}.")
        if not (0.0 <= float(self.chance_specificity) < 1.0):
            raise ValueError(f"StateConfig.chance_specificity must lie in [0, 1) (e.g. 0.95; 0: off), "
                             f"got {self.chance_specificity!r}.")
        if not (0.0 < float(self.chance_top) <= 1.0):
            raise ValueError(f"StateConfig.chance_top must lie in (0, 1] (e.g. 0.25), got {self.chance_top!r}.")
        if isinstance(self.n, bool) or not isinstance(self.n, (int, np.integer)) or self.n < 1:
            raise ValueError(f"StateConfig.n must be an integer >= 1 (e.g. 128), got {self.n!r}.")
        if not (0.0 < float(self.alpha) < 1.0):
            raise ValueError(f"StateConfig.alpha must lie strictly between 0 and 1 (e.g. 0.05), got {self.alpha!r}.")
        if self.eps is not None and not (0.0 < float(self.eps) <= 1.0):
            raise ValueError(
                f"StateConfig.eps must lie in (0, 1] (a probability), got {self.eps!r}; "
                "leave it None to use -ln(alpha)/n."
            )

    @property
    def threshold(self) -> float:
        """The probability threshold eps: ``eps`` if given, else ``-ln(alpha)/n``."""
        if self.eps is not None:
            return float(self.eps)
        return min(1.0, -math.log(self.alpha) / self.n)

    @property
    def log_threshold(self) -> float:
        """``log(eps)``, the threshold on ``logp_gold``."""
        return math.log(self.threshold)

    def resolve(self, *tables: pd.DataFrame) -> StateConfig:
        """This config with ``auto`` replaced (``auto_criterion``)."""
        if self.criterion != "auto":
            return self
        return dataclasses.replace(self, criterion=auto_criterion(self, *tables)[0])

    def with_criterion(self, criterion: str) -> StateConfig:
        """The same thresholds under another criterion."""
        return dataclasses.replace(self, criterion=criterion)


def auto_criterion(config: StateConfig, *tables: pd.DataFrame) -> tuple[str, str]:
    """What ``auto`` means for these tables, and why (the sentence report.md prints).

    ``chance`` when every table has distractor columns, else ``logprob``; but when the
    format diagnostics (``formats.format_warning``) say that the scored continuation is
    not where some model puts its mass, the teacher-forced line is not trusted:
    ``chance`` if every table was scored under an answer prefix with distractors (the
    distractors are scored in the same place, so the relative line still holds), else
    ``sampling`` when every table has samples.
    """
    from massshift.score.formats import format_summary  # analysis module, no torch

    chance = bool(tables) and all(has_distractors(t) for t in tables)
    needed = ("answers", "greedy", "greedy_correct", "logp_gold")
    if not tables or not all(all(c in t.columns for c in needed) and len(t) for t in tables):
        return decide_auto(config, [], chance, False)
    summaries = [format_summary(t, config.threshold) for t in tables]
    return decide_auto(config, summaries, chance, all(has_samples(t) for t in tables))


def decide_auto(config: StateConfig, summaries: list[dict], chance: bool, sampled: bool) -> tuple[str, str]:
    """``auto_criterion`` from the tables' format summaries (``formats.format_summary``, or a
    ``FormatTally`` fed chunk by chunk), whether every table has distractor columns (``chance``)
    and whether every fact of every table has samples (``sampled``); no summaries: no format check."""
    default = "chance" if chance else "logprob"
    base_reason = ("distractors were scored for every table" if chance else "no distractor columns") + \
        f", so auto is {default}"
    if not summaries:
        return default, base_reason
    warned = [s for s in summaries if s.get("warning")]
    if not warned:
        return default, base_reason + " (the format diagnostics raised no warning)"
    prefixed = all(s["prefix"] == "prefix" for s in summaries)
    if prefixed and chance:
        return "chance", ("the format warning fired under an answer prefix with distractors scored, so auto is "
                          "chance (gold and distractors are scored in the same place)")
    if sampled:
        return "sampling", ("the format warning fired (the scored continuation is not where the model puts its "
                            "mass), so auto is sampling instead of " + default)
    logger.warning("the format warning fired but some table has no samples; auto stays %s", default)
    return default, base_reason + "; the format warning fired, but without samples there is no better criterion"


def has_distractors(df: pd.DataFrame) -> bool:
    """Whether ``df`` carries the distractor columns (``schema.DISTRACTOR_COLUMNS``)."""
    return all(c in df.columns for c in DISTRACTOR_COLUMNS)


def _require(df: pd.DataFrame, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ScoreTableError(f"{what} needs column(s) {', '.join(missing)}; the table has {', '.join(map(str, df.columns))}.")


def _check_samples(df: pd.DataFrame, what: str) -> None:
    """Raise naming the facts that have no samples (the sampling criterion needs them)."""
    _require(df, ("n_samples", "n_correct"), what)
    empty = df["n_samples"].to_numpy() <= 0
    if empty.any():
        ids = df.loc[empty, "fact_id"].astype(str).tolist() if "fact_id" in df.columns else []
        shown = ", ".join(ids[:10]) + (", ..." if len(ids) > 10 else "")
        raise ScoreTableError(
            f"{what} needs samples, but {int(empty.sum())} fact(s) have n_samples == 0 (e.g. fact_id {shown}). "
            "Score with samples (n_samples > 0) or use criterion='logprob'."
        )


def is_tail_logprob(logp_gold: pd.Series | np.ndarray, eps: float) -> np.ndarray:
    """Whether p(gold) >= eps, i.e. ``logp_gold >= log(eps)``; NaN and -inf are False."""
    logp = np.asarray(logp_gold, dtype=float)
    with np.errstate(invalid="ignore"):
        return np.isfinite(logp) & (logp >= math.log(eps))


def is_tail_chance(df: pd.DataFrame, config: StateConfig) -> np.ndarray:
    """The ``chance`` line (module docstring): p(gold) >= eps, gold in the top share, above median x ratio.

    NaN anywhere (no distractors, NaN log-prob) is False.
    """
    _require(df, ("logp_gold", *DISTRACTOR_COLUMNS), "the chance criterion (score with distractors > 0)")
    logp = df["logp_gold"].to_numpy(dtype=float)
    rank = df["gold_rank"].to_numpy(dtype=float)
    n_d = df["n_distractors"].to_numpy(dtype=float)
    median = df["logp_median_distractor"].to_numpy(dtype=float)
    with np.errstate(invalid="ignore"):
        top = rank <= np.ceil(config.chance_top * (n_d + 1) - 1e-9)  # guard 0.25 * 4 = 1.0000000000000002
        margin = logp >= median + math.log(config.chance_ratio)
    return is_tail_logprob(logp, config.threshold) & (n_d > 0) & top & margin & _specific(df, config)


MIN_PRIOR = 10
"""Fewest other-subject scores of a value for the value-prior test (rule 4 of ``chance``) to apply."""


def _specific(df: pd.DataFrame, config: StateConfig) -> np.ndarray:
    """Rule 4 of ``chance``: prior_quantile >= chance_specificity where prior_n >= MIN_PRIOR."""
    from massshift.score.distractors import PRIOR_COLUMNS, value_prior_columns

    if config.chance_specificity == 0:
        return np.ones(len(df), dtype=bool)
    if all(c in df.columns for c in PRIOR_COLUMNS):
        prior = df[list(PRIOR_COLUMNS)]
    elif all(c in df.columns for c in ("distractors", "distractor_logps", "question", "answers")):
        prior = value_prior_columns(df)
    else:
        logger.warning("the chance criterion's value-prior test needs the distractor lists or prior columns; "
                       "this table has neither, so rules 1-3 alone decide")
        return np.ones(len(df), dtype=bool)
    q = prior["prior_quantile"].to_numpy(dtype=float)
    n = prior["prior_n"].to_numpy(dtype=float)
    with np.errstate(invalid="ignore"):
        return (n < MIN_PRIOR) | (q >= config.chance_specificity)


def assign_states(df: pd.DataFrame, config: StateConfig | None = None) -> pd.Series:
    """The state of every fact of a score table under ``config.criterion`` (``auto`` resolved on ``df``).

    Returns a string Series (values in ``schema.STATES``) aligned with ``df.index``.
    The sampling criterion raises ``ScoreTableError`` naming facts with ``n_samples == 0``;
    the chance criterion raises when the distractor columns are missing.
    """
    config = (config or StateConfig()).resolve(df)
    _require(df, ("greedy_correct",), "assign_states")
    greedy = df["greedy_correct"].to_numpy(dtype=bool)
    if config.criterion == "logprob":
        _require(df, ("logp_gold",), "the logprob criterion")
        tail = is_tail_logprob(df["logp_gold"], config.threshold)
    elif config.criterion == "chance":
        tail = is_tail_chance(df, config)
    else:
        _check_samples(df, "the sampling criterion")
        tail = df["n_correct"].to_numpy() >= 1
    states = np.where(greedy, GREEDY, np.where(tail, TAIL, ABSENT))
    return pd.Series(states, index=df.index, name="state", dtype=object)


def has_samples(df: pd.DataFrame) -> bool:
    """Whether every row of ``df`` has at least one sample."""
    return "n_samples" in df.columns and len(df) > 0 and bool((df["n_samples"].to_numpy() > 0).all())


def add_state_columns(df: pd.DataFrame, config: StateConfig | None = None) -> pd.DataFrame:
    """A copy of ``df`` with ``state_logprob``, ``state_sampling``, ``state_chance`` and ``state`` columns.

    ``state_sampling`` is added only when every row has samples, ``state_chance``
    only when the distractor columns exist; ``state`` is the state under
    ``config.criterion`` (``auto`` resolved on ``df``; overwriting any ``state``
    column scoring wrote).
    """
    config = (config or StateConfig()).resolve(df)
    out = df.copy()
    out["state_logprob"] = assign_states(df, config.with_criterion("logprob"))
    if has_samples(df):
        out["state_sampling"] = assign_states(df, config.with_criterion("sampling"))
    elif config.criterion == "sampling":
        _check_samples(df, "the sampling criterion")
    if has_distractors(df):
        out["state_chance"] = assign_states(df, config.with_criterion("chance"))
    elif config.criterion == "chance":
        _require(df, DISTRACTOR_COLUMNS, "the chance criterion (score with distractors > 0)")
    out["state"] = out[f"state_{config.criterion}"]
    return out


def agreement(df: pd.DataFrame, suffix: str = "", criteria: tuple[str, str] = ("logprob", "sampling")) -> float:
    """Share of facts whose state is the same under two criteria (default logprob and sampling).

    Reads ``state_<criterion>{suffix}`` (``suffix`` is ``"_base"`` or ``"_rl"`` on a
    merged table). NaN for an empty table.
    """
    cols = tuple(f"state_{c}{suffix}" for c in criteria)
    _require(df, cols, "agreement (run add_state_columns on a table with samples first)")
    if len(df) == 0:
        return float("nan")
    return float((df[cols[0]].to_numpy() == df[cols[1]].to_numpy()).mean())


def pairwise_agreement(df: pd.DataFrame, suffix: str = "") -> dict[str, float]:
    """Agreement of every pair of criteria whose state columns exist, keyed ``"logprob~chance"`` etc."""
    return agreement_pairs({c: df[f"state_{c}{suffix}"].to_numpy() for c in CRITERIA
                            if f"state_{c}{suffix}" in df.columns})


def agreement_pairs(states: dict[str, np.ndarray]) -> dict[str, float]:
    """Share of facts on which each pair of criteria (in ``CRITERIA`` order) gives the same state."""
    have = [c for c in CRITERIA if c in states]
    return {f"{a}~{b}": float((np.asarray(states[a]) == np.asarray(states[b])).mean())
            for i, a in enumerate(have) for b in have[i + 1:]}


def slick_class(df: pd.DataFrame) -> pd.Series:
    """SliCK knowledge classes (Gekhman et al. 2024, arXiv 2405.05904), approximated.

    - HighlyKnown: greedy answer correct and every sample correct;
    - MaybeKnown: greedy answer correct, some sample wrong;
    - WeaklyKnown: greedy answer wrong, at least one sample correct;
    - Unknown: greedy answer wrong and no sample correct.

    Approximation: SliCK estimates P_correct from several greedy decodes and
    several temperature samples, each under different few-shot prompts. Here
    there is one zero-shot prompt, so "greedy always / sometimes correct" is
    replaced by the single greedy answer, and the samples of the score table
    stand in for the temperature samples. Needs ``n_samples > 0`` on every row.
    """
    _require(df, ("greedy_correct",), "slick_class")
    _check_samples(df, "slick_class")
    greedy = df["greedy_correct"].to_numpy(dtype=bool)
    n = df["n_samples"].to_numpy()
    c = df["n_correct"].to_numpy()
    classes = np.where(
        greedy,
        np.where(c >= n, "HighlyKnown", "MaybeKnown"),
        np.where(c >= 1, "WeaklyKnown", "Unknown"),
    )
    return pd.Series(classes, index=df.index, name="slick_class", dtype=object)
