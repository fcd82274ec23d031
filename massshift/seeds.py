"""Seed derivation: every seed massshift uses comes from a SHA-256 of its parts, so a subset re-run, another
machine or another Python gives the same numbers. No global random state is read or set anywhere.
"""

from __future__ import annotations

import hashlib

import numpy as np


def _digest(parts: tuple[object, ...], sep: str) -> bytes:
    return hashlib.sha256(sep.join(str(p) for p in parts).encode()).digest()


def derive_seed(*parts: object) -> int:
    """A 60-bit seed from any parts, e.g. ``(seed, fact_id)`` or ``(seed, "epoch", 3)``."""
    return int.from_bytes(_digest(parts, "\x1f")[:8], "big") >> 4


def fact_seed(seed: int, fact_id: str) -> int:
    """The seed of one fact's samples: ``derive_seed(seed, fact_id)``."""
    return derive_seed(seed, fact_id)


def derive_seed32(*parts: object) -> int:
    """A 32-bit seed (the top bits of ``derive_seed``'s digest), for generators that take 32 bits."""
    return int.from_bytes(_digest(parts, "\x1f")[:4], "big")


def fact_rng(seed: int, fact_id: str) -> np.random.Generator:
    """A numpy generator for one fact's draws (distractors). Its digest joins the parts with NUL and reads
    the first 8 bytes little-endian: kept so that score tables cached before this module stay valid."""
    return np.random.default_rng(int.from_bytes(_digest((seed, fact_id), "\x00")[:8], "little"))
