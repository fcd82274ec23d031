"""Paired bootstrap over facts: the one resampling scheme behind every confidence interval.

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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

Stat = Callable[[np.ndarray], np.ndarray]  # (n_resamples, n_facts) indices -> (n_resamples, ...) values


@dataclass(frozen=True)
class StatsConfig:
    """Bootstrap settings.

    Attributes:
        n_boot: number of paired bootstrap resamples (2000).
        ci: confidence level of the percentile intervals (0.95).
        seed: seed of ``np.random.default_rng`` for the resamples (0).
    """

    n_boot: int = 2000
    ci: float = 0.95
    seed: int = 0

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
