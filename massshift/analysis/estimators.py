"""Estimators: the paired bootstrap over facts (the one resampling scheme behind every confidence
interval), the unbiased pass@k estimator (Chen et al. 2021; used by Yue et al. 2025, arXiv 2504.13837; the
project's one definition) and the support counts of Wu et al. 2025.

The bootstrap:

Every statistic of a comparison is recomputed on the same ``n_boot`` resamples of
fact indices, drawn from ``np.random.default_rng(seed)`` (no global state), so
intervals of related numbers (accuracy of both models, absolute and relative
gain) come from one paired bootstrap. The interval is the percentile interval;
resamples where a statistic is undefined (a ratio with zero denominator, a
median of an empty group) are left out of its interval. A statistic is a
function of an index matrix ``(n_resamples, n_facts)`` returning one value per
resample (or one row of values), so the point estimate and the resamples run the
same code.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from massshift.configio import help_field
from massshift.score.schema import ScoreTableError

Stat = Callable[[np.ndarray], np.ndarray]  # (n_resamples, n_facts) indices -> (n_resamples, ...) values


@dataclass(frozen=True)
class StatsConfig:
    """Bootstrap settings."""

    n_boot: int = help_field(2000, help="Number of paired bootstrap resamples.")
    ci: float = help_field(0.95, help="Confidence level of the percentile intervals, in (0, 1).")
    seed: int = help_field(0, help="Seed of the bootstrap resamples.")

    def __post_init__(self) -> None:
        if isinstance(self.n_boot, bool) or not isinstance(self.n_boot, (int, np.integer)) or self.n_boot < 1:
            raise ValueError(f"StatsConfig.n_boot must be an integer >= 1 (e.g. 2000), got {self.n_boot!r}.")
        if not (0.0 < float(self.ci) < 1.0):
            raise ValueError(f"StatsConfig.ci must lie strictly between 0 and 1 (e.g. 0.95), got {self.ci!r}.")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(f"StatsConfig.seed must be a non-negative integer, got {self.seed!r}.")


class Bootstrap:
    """Paired bootstrap over ``n`` facts: the same resamples for every statistic."""

    def __init__(self, n: int, config: StatsConfig | None = None, chunk: int = 256) -> None:
        self.n, self.config, self.chunk = int(n), config or StatsConfig(), chunk
        self._cache: list[np.ndarray] | None = None
        if self.n * self.config.n_boot <= 4_000_000:  # small enough to keep in memory
            self._cache = list(self._draw())

    def _draw(self) -> Iterator[np.ndarray]:
        rng = np.random.default_rng(self.config.seed)
        done = 0
        while done < self.config.n_boot:
            size = min(self.chunk, self.config.n_boot - done)
            yield rng.integers(0, self.n, size=(size, self.n))
            done += size

    def replicates(self, stat: Stat) -> np.ndarray:
        """``stat`` evaluated on every resample, stacked along axis 0."""
        chunks = self._cache if self._cache is not None else self._draw()
        with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices of masked medians
            return np.concatenate([np.asarray(stat(idx), dtype=float) for idx in chunks], axis=0)

    def point(self, stat: Stat) -> np.ndarray:
        """``stat`` on the observed sample (the identity resample)."""
        with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.asarray(stat(np.arange(self.n)[None, :]), dtype=float)[0]

    def interval(self, reps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Percentile interval per statistic, ignoring resamples where it is undefined."""
        tail = 100.0 * (1.0 - self.config.ci) / 2.0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            reps = np.where(np.isfinite(reps), reps, np.nan)
            lo, hi = np.nanpercentile(reps, [tail, 100.0 - tail], axis=0)
        return lo, hi

    def estimate(self, stat: Stat) -> dict[str, Any]:
        """``{"value": point, "ci": [lo, hi]}`` for a scalar statistic."""
        value = float(self.point(stat))
        lo, hi = self.interval(self.replicates(stat))
        return {"value": as_number(value), "ci": [as_number(lo), as_number(hi)]}


def as_number(x: Any) -> float | None:
    """A plain float for JSON, or None when undefined (NaN or infinite)."""
    x = float(x)
    return x if math.isfinite(x) else None


def mean_stat(x: np.ndarray) -> Stat:
    return lambda idx: x[idx].mean(axis=1)


def count_stat(mask: np.ndarray) -> Stat:
    return lambda idx: mask[idx].sum(axis=1).astype(float)


def ratio_stat(num: np.ndarray, den: np.ndarray) -> Stat:
    return lambda idx: num[idx].sum(axis=1) / den[idx].sum(axis=1)


def masked_stat(values: np.ndarray, mask: np.ndarray, reduce: Callable[..., np.ndarray]) -> Stat:
    masked = np.where(mask, values, np.nan)
    return lambda idx: reduce(masked[idx], axis=1)


def pass_at_k(n: Any, c: Any, k: int) -> Any:
    """Unbiased pass@k, ``1 - C(n-c, k) / C(n, k)``, vectorised over ``n`` and ``c``.

    Computed as ``1 - prod_{j<k} (n-c-j)/(n-j)`` (a product of k ratios in [0, 1],
    numerically stable where the binomials overflow). ``k > n`` is an error.
    Returns a float for scalar inputs, else an array.
    """
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    k = int(k)
    n_arr, c_arr = np.broadcast_arrays(np.asarray(n, dtype=float), np.asarray(c, dtype=float))
    if (n_arr < k).any():
        raise ValueError(f"pass@k needs k <= n, got k={k} with n as small as {n_arr.min():g}; use a smaller k")
    if ((c_arr < 0) | (c_arr > n_arr)).any():
        raise ValueError("pass@k needs 0 <= c <= n for every problem")
    wrong = n_arr - c_arr
    ratio = np.ones(n_arr.shape)
    for j in range(k):
        ratio *= np.clip((wrong - j) / (n_arr - j), 0.0, None)
    out = 1.0 - ratio
    return float(out) if out.ndim == 0 else out


def default_ks(n: int) -> list[int]:
    """1, 2, 4, ... up to ``n``, with ``n`` itself last."""
    ks = [1 << i for i in range(int(math.log2(n)) + 1)] if n >= 1 else []
    return ks + ([n] if ks and ks[-1] != n else [])


def pass_at_k_curve(df: pd.DataFrame, ks: Sequence[int] | None = None, suffix: str = "") -> pd.DataFrame:
    """Mean pass@k over facts for each k (default 1, 2, 4, ..., n): columns ``k, pass_at_k``."""
    n_col, c_col = f"n_samples{suffix}", f"n_correct{suffix}"
    if len(df) == 0 or (df[n_col].to_numpy() <= 0).any():
        raise ScoreTableError(f"pass@k needs samples on every fact ({n_col} > 0)")
    n, c = df[n_col].to_numpy(), df[c_col].to_numpy()
    ks = default_ks(int(n.min())) if ks is None else list(ks)
    values = [float(np.mean(pass_at_k(n, c, k))) for k in ks]
    return pd.DataFrame({"k": ks, "pass_at_k": values})


def crossing_k(curve_base: pd.DataFrame, curve_rl: pd.DataFrame) -> int | None:
    """First k where base >= RL, given RL > base at the smallest k; else None."""
    both = curve_base.merge(curve_rl, on="k", suffixes=("_base", "_rl")).sort_values("k")
    if both.empty or not both["pass_at_k_rl"].iloc[0] > both["pass_at_k_base"].iloc[0]:
        return None
    hit = both[both["pass_at_k_base"] >= both["pass_at_k_rl"]]
    return int(hit["k"].iloc[0]) if len(hit) else None


# ----------------------------------------------------------------------------- states and accuracy


def support_counts(in_base: np.ndarray, in_rl: np.ndarray) -> dict[str, Any]:
    """P/S/E/O counts and SRR, NDR, SDS, NSCR (Wu et al. 2025, arXiv 2507.14843).

    P: in both supports, S: base only (shrunk), E: RL only (expanded), O: neither.
    SRR = P/(P+S), NDR = E/(P+E), SDS = their harmonic mean (0 when either is 0),
    NSCR = (E-S)/(P+E+S); a zero denominator gives None.
    """
    in_base, in_rl = np.asarray(in_base, bool), np.asarray(in_rl, bool)
    p, s = int((in_base & in_rl).sum()), int((in_base & ~in_rl).sum())
    e, o = int((~in_base & in_rl).sum()), int((~in_base & ~in_rl).sum())
    srr = p / (p + s) if p + s else None
    ndr = e / (p + e) if p + e else None
    if srr is None or ndr is None:
        sds = None
    else:
        sds = 0.0 if srr == 0 or ndr == 0 else 2 * srr * ndr / (srr + ndr)
    nscr = (e - s) / (p + e + s) if p + e + s else None
    return {"P": p, "S": s, "E": e, "O": o, "SRR": srr, "NDR": ndr, "SDS": sds, "NSCR": nscr}
