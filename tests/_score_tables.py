"""Synthetic score tables for the analysis tests (categories, transitions, stats, plots, report).

Built from a seeded numpy Generator when a test asks, never at import. The RL
table moves probability mass up for most facts (as RL is said to), with noise,
so that every transition occurs; a few log-probs are -inf or NaN on purpose.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from massshift.score.schema import SCORE_COLUMNS


def score_table(
    model: str, ids: list[str], logp: np.ndarray, greedy_correct: np.ndarray, n_correct: np.ndarray,
    n_samples: int, entropy: np.ndarray,
) -> pd.DataFrame:
    n = len(ids)
    table = pd.DataFrame({
        "fact_id": ids,
        "question": [f"Question {i}?" for i in range(n)],
        "answers": [[f"answer {i}", f"alias {i}"] for i in range(n)],
        "model": model,
        "greedy": [f"answer {i}" if g else "wrong" for i, g in enumerate(greedy_correct)],
        "greedy_correct": np.asarray(greedy_correct, dtype=bool),
        "logp_gold": np.asarray(logp, dtype=float),
        "logp_gold_per_token": np.asarray(logp, dtype=float) / 2.0,
        "best_alias": [f"answer {i}" for i in range(n)],
        "is_greedy": np.asarray(greedy_correct, dtype=bool),
        "n_samples": np.full(n, n_samples, dtype=np.int64),
        "n_correct": np.asarray(n_correct, dtype=np.int64),
        "sample_answers": [json.dumps({"x": int(c)}) for c in n_correct],
        "answer_entropy": np.asarray(entropy, dtype=float) if n_samples else np.full(n, np.nan),
        "state": "absent",
        "relation": [f"rel{i % 3}" for i in range(n)],
        "popularity": np.arange(n, dtype=float),
    })
    assert list(table.columns[: len(SCORE_COLUMNS)]) == list(SCORE_COLUMNS)
    return table


def make_pair(n: int = 200, seed: int = 0, n_samples: int = 16, n_rl: int = 1):
    """(base, [rl_1, ..., rl_n_rl]) score tables over the same ``n`` facts."""
    rng = np.random.default_rng(seed)
    ids = [f"fact-{i:04d}" for i in range(n)]
    logp = np.log(np.clip(rng.beta(0.5, 1.5, n), 1e-7, 1.0))
    logp[0], logp[1] = -np.inf, np.nan

    def model(name: str, lp: np.ndarray) -> pd.DataFrame:
        p = np.exp(np.nan_to_num(lp, nan=-np.inf))
        greedy = p > rng.uniform(0.15, 0.7, n)
        n_correct = rng.binomial(n_samples, p) if n_samples else np.zeros(n, dtype=np.int64)
        ent = rng.gamma(2.0, 0.4, n) * (1 - p)
        return score_table(name, ids, lp, greedy, n_correct, n_samples, ent)

    base = model("base", logp)
    rls, lp = [], logp.copy()
    for step in range(n_rl):
        with np.errstate(invalid="ignore"):
            lp = np.minimum(lp + rng.normal(1.2 / n_rl, 1.0, n), 0.0)
        lp[2] = -np.inf
        rls.append(model(f"rl{step}", lp))
    return base, rls
