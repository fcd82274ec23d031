"""Invented names: capitalised, pronounceable words from a seeded syllable generator (the synthetic world's
people and values, and the fabricated subjects of never-seen controls)."""

from __future__ import annotations

import numpy as np

_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "kr", "st", "tr", "th")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ei", "ou")
_CODAS = ("", "", "n", "r", "l", "s", "m", "k")


def invent_names(rng: np.random.Generator, n: int, taken: set[str]) -> list[str]:
    """``n`` capitalised, pronounceable, single-word names absent from ``taken`` (lower-cased).

    The names found are added to ``taken``.
    """
    names: list[str] = []
    while len(names) < n:
        n_syll = int(rng.integers(2, 4))
        parts = [_ONSETS[rng.integers(len(_ONSETS))] + _VOWELS[rng.integers(len(_VOWELS))] for _ in range(n_syll)]
        name = ("".join(parts) + _CODAS[rng.integers(len(_CODAS))]).capitalize()
        if name.lower() not in taken:
            taken.add(name.lower())
            names.append(name)
    return names
