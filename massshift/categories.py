"""The state rules: greedy-correct, tail-correct or absent, for one fact under one model.

A fact is

- *greedy-correct* when the model's greedy answer is correct;
- *tail-correct* when it is not, but the correct answer is accessible: its
  probability p(gold) is at least ``eps`` (criterion ``logprob``, the default),
  or at least one of the model's n samples is correct (criterion ``sampling``);
- *absent* otherwise.

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

import logging
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from massshift.schema import STATES, ScoreTableError

logger = logging.getLogger(__name__)

GREEDY, TAIL, ABSENT = STATES
CRITERIA: tuple[str, ...] = ("logprob", "sampling")
SLICK_CLASSES: tuple[str, ...] = ("HighlyKnown", "MaybeKnown", "WeaklyKnown", "Unknown")


@dataclass(frozen=True)
class StateConfig:
    """How facts are sorted into states.

    Attributes:
        criterion: ``"logprob"`` (p(gold) >= eps, the default) or ``"sampling"``
            (at least one correct sample among ``n_samples``).
        n: the sample budget that defines the default threshold (128, as in the paper).
        alpha: the miss probability that defines the default threshold (0.05).
        eps: an explicit probability threshold in (0, 1]; ``None`` means ``-ln(alpha)/n``.
    """

    criterion: str = "logprob"
    n: int = 128
    alpha: float = 0.05
    eps: float | None = None

    def __post_init__(self) -> None:
        if self.criterion not in CRITERIA:
            raise ValueError(
                f"StateConfig.criterion must be one of {CRITERIA}, got {self.criterion!r}; "
                "use 'logprob' for p(gold) >= eps or 'sampling' for at least one correct sample."
            )
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


def assign_states(df: pd.DataFrame, config: StateConfig | None = None) -> pd.Series:
    """The state of every fact of a score table under ``config.criterion``.

    Returns a string Series (values in ``schema.STATES``) aligned with ``df.index``.
    The sampling criterion raises ``ScoreTableError`` naming facts with ``n_samples == 0``.
    """
    config = config or StateConfig()
    _require(df, ("greedy_correct",), "assign_states")
    greedy = df["greedy_correct"].to_numpy(dtype=bool)
    if config.criterion == "logprob":
        _require(df, ("logp_gold",), "the logprob criterion")
        tail = is_tail_logprob(df["logp_gold"], config.threshold)
    else:
        _check_samples(df, "the sampling criterion")
        tail = df["n_correct"].to_numpy() >= 1
    states = np.where(greedy, GREEDY, np.where(tail, TAIL, ABSENT))
    return pd.Series(states, index=df.index, name="state", dtype=object)


def has_samples(df: pd.DataFrame) -> bool:
    """Whether every row of ``df`` has at least one sample."""
    return "n_samples" in df.columns and len(df) > 0 and bool((df["n_samples"].to_numpy() > 0).all())


def add_state_columns(df: pd.DataFrame, config: StateConfig | None = None) -> pd.DataFrame:
    """A copy of ``df`` with ``state_logprob``, ``state_sampling`` and ``state`` columns.

    ``state_sampling`` is added only when every row has samples; ``state`` is the
    state under ``config.criterion`` (overwriting any ``state`` column scoring wrote).
    """
    config = config or StateConfig()
    out = df.copy()
    out["state_logprob"] = assign_states(df, _with_criterion(config, "logprob"))
    if has_samples(df):
        out["state_sampling"] = assign_states(df, _with_criterion(config, "sampling"))
    elif config.criterion == "sampling":
        _check_samples(df, "the sampling criterion")
    out["state"] = out[f"state_{config.criterion}"]
    return out


def _with_criterion(config: StateConfig, criterion: str) -> StateConfig:
    return StateConfig(criterion=criterion, n=config.n, alpha=config.alpha, eps=config.eps)


def agreement(df: pd.DataFrame, suffix: str = "") -> float:
    """Share of facts whose state is the same under both criteria.

    Reads ``state_logprob{suffix}`` and ``state_sampling{suffix}`` (``suffix`` is
    ``"_base"`` or ``"_rl"`` on a merged table). NaN for an empty table.
    """
    cols = (f"state_logprob{suffix}", f"state_sampling{suffix}")
    _require(df, cols, "agreement (run add_state_columns on a table with samples first)")
    if len(df) == 0:
        return float("nan")
    return float((df[cols[0]].to_numpy() == df[cols[1]].to_numpy()).mean())


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
