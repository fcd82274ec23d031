"""How good is a ``--judge`` model? Its verdicts on answers whose truth is known, from real PopQA facts.

For each PopQA fact the judge is shown one gold answer (the dataset's ``obj``) and four answers the string
matcher (``exact``) rejects:

- ``alias``: another of the fact's accepted answers (``possible_answers``) that ``exact`` does not match
  (``USA`` for ``United States of America``): true;
- ``sentence``: the gold answer inside a sentence, the way chat models answer (``The answer is X.``): true;
- ``other``: the gold answer of another fact of the same relation that is not among this fact's accepted
  answers: false;
- ``other sentence``: that wrong answer inside the same sentence: false.

Printed: the share the judge accepts in each group (true-positive rates, false-positive rates), and the AUC of
its yes/no margin, true answers against false ones (0.5: no better than a coin). Nothing here is tuned: the
judge's prompt and threshold (margin > 0) are fixed in ``massshift/lm/judge.py``.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/judge_quality.py --judge smollm2-135m --facts 200
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import pandas as pd

from massshift.data.matching import MatchConfig, is_correct, normalize

POPQA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "popqa" / "s_pop_100000_to_inf.parquet"
SENTENCE = "The answer is {}."


def judge_pairs(popqa: pd.DataFrame, n_facts: int, seed: int = 0) -> list[dict]:
    """(gold, prediction, truth, group) rows for ``n_facts`` facts drawn with ``seed`` (see the docstring)."""
    rng = random.Random(seed)
    rows = popqa.assign(answers=popqa["possible_answers"].map(json.loads)).to_dict("records")
    rows = [r for r in rows if r["obj"] in r["answers"]]
    by_prop: dict[str, list[dict]] = {}
    for r in rows:
        by_prop.setdefault(r["prop"], []).append(r)
    rng.shuffle(rows)
    pairs = []
    for r in rows[:n_facts]:
        gold, accepted = r["obj"], {normalize(a) for a in r["answers"]}
        aliases = [a for a in r["answers"] if not is_correct(a, [gold], mode="exact")]
        others = [o["obj"] for o in by_prop[r["prop"]] if normalize(o["obj"]) not in accepted]
        if aliases:
            pairs.append({"gold": gold, "prediction": rng.choice(aliases), "truth": True, "group": "alias"})
        pairs.append({"gold": gold, "prediction": SENTENCE.format(gold), "truth": True, "group": "sentence"})
        if others:
            wrong = rng.choice(others)
            pairs.append({"gold": gold, "prediction": wrong, "truth": False, "group": "other"})
            pairs.append({"gold": gold, "prediction": SENTENCE.format(wrong), "truth": False,
                          "group": "other sentence"})
    return pairs


def auc(pos: list[float], neg: list[float]) -> float:
    """P(a true answer's margin > a false one's), ties counted half (the Mann-Whitney U statistic)."""
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--judge", default="smollm2-135m", help="any checkpoint massshift loads")
    ap.add_argument("--facts", type=int, default=200, help="PopQA facts (>= 100,000 views) drawn")
    ap.add_argument("--popqa", type=Path, default=POPQA)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    import torch

    from massshift.lm.judge import Judge
    from massshift.lm.loading import load_model

    torch.set_num_threads(args.threads)
    model, tok, info = load_model(args.judge)
    judge = Judge(model, tok, info.cache_key, MatchConfig(mode="exact"))
    pairs = judge_pairs(pd.read_parquet(args.popqa), args.facts, args.seed)
    t0 = time.perf_counter()
    for p in pairs:
        p["margin"] = judge.margin(p["prediction"], [p["gold"]])
        p["accepted"] = p["margin"] > 0
    took = time.perf_counter() - t0
    table = pd.DataFrame(pairs)
    print(f"judge {args.judge} ({'chat template' if judge.chat else 'plain prompt'}), {args.facts} PopQA facts, "
          f"{len(table)} answers in {took:.0f} s ({len(table) / took:.1f}/s)")
    for group, part in table.groupby("group", sort=False):
        kind = "true-positive rate" if part["truth"].iloc[0] else "false-positive rate"
        print(f"  {group:15s} n={len(part):4d}  accepted {part['accepted'].mean():6.1%}  ({kind})")
    pos = table.loc[table["truth"], "margin"].tolist()
    neg = table.loc[~table["truth"], "margin"].tolist()
    acc = (table["accepted"] == table["truth"]).mean()
    print(f"  accuracy {acc:.1%}  AUC of the margin, true vs false answers {auc(pos, neg):.3f}")
    for group in ("alias", "other"):
        print(f"  examples ({group}):")
        for r in table[table["group"] == group].head(5).itertuples():
            print(f"    gold {r.gold!r:32s} answer {r.prediction!r:32s} margin {r.margin:+.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
