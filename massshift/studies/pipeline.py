"""The stage machinery of whole studies (the demo, the country study): stages reused when their settings
are unchanged, their reuse keys, and the tables of methods with confidence intervals."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from massshift.rundir import jsonable, write_json

logger = logging.getLogger(__name__)


def config_key(obj: Any) -> str:
    """A short stable hash of a stage's settings (the key ``run_stage`` compares)."""
    return hashlib.sha256(json.dumps(jsonable(obj), sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_stage(out: Path, name: str, key: str, run: Callable[[Path], None]) -> Path:
    """Run a stage into ``out/name`` unless a finished run with the same key is there."""
    d = out / name
    marker = d / "stage.json"
    if marker.exists() and json.loads(marker.read_text()).get("key") == key:
        logger.info("%s: reusing %s", name, d)
        return d
    start = time.perf_counter()
    logger.info("%s ...", name)
    run(d)
    write_json(marker, {"key": key, "seconds": time.perf_counter() - start})
    logger.info("%s: done in %.1f s", name, time.perf_counter() - start)
    return d


class Stages:
    """The stages of one study run into ``out`` (``run_stage``), each one's seconds kept in ``timings``."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.timings: dict[str, float] = {}
        self._start = time.perf_counter()

    def run(self, name: str, key: str, fn: Callable[[Path], None]) -> Path:
        """``run_stage(out, name, key, fn)``, timed under ``name``."""
        with self.timed(name):
            return run_stage(self.out, name, key, fn)

    @contextmanager
    def timed(self, name: str) -> Iterator[None]:
        """Time the block under ``name`` (seconds, one decimal)."""
        t = time.perf_counter()
        yield
        self.timings[name] = round(time.perf_counter() - t, 1)

    def finish(self) -> dict[str, float]:
        """The timings with ``total``, the seconds since the stages began."""
        self.timings["total"] = round(time.perf_counter() - self._start, 1)
        return self.timings


def method_results(base: str, train: pd.DataFrame, test: pd.DataFrame, scores: dict[str, pd.DataFrame],
                   bcfg: Any, prompt: Any = None) -> pd.DataFrame:
    """Accuracy with CIs of each method of ``method_correct`` on ``test``."""
    from massshift.studies.baselines import accuracy_table

    return accuracy_table(method_correct(base, train, test, scores, bcfg, prompt), n_boot=bcfg.n_boot, ci=bcfg.ci,
                          seed=bcfg.seed)


def method_correct(base: str, train: pd.DataFrame, test: pd.DataFrame, scores: dict[str, pd.DataFrame],
                   bcfg: Any, prompt: Any = None) -> dict[str, pd.Series]:
    """Per method, whether each fact of ``test`` (in its order) was answered right: each scored model (its
    ``greedy_correct``), the base model's inference-time baselines (``baselines.run_baselines`` with ``bcfg``
    and ``prompt``) and the constant answer (each relation's most common value among the ``train`` facts,
    ``analysis.constant``)."""
    from massshift.analysis.constant import constant_answers
    from massshift.data.matching import is_correct
    from massshift.lm.loading import load_model
    from massshift.studies.baselines import run_baselines

    model, tok, _ = load_model(base)
    preds = run_baselines(model, tok, test, train, bcfg, prompt)
    order = list(test["fact_id"].astype(str))
    correct = {name: table.set_index("fact_id").loc[order, "greedy_correct"].reset_index(drop=True)
               for name, table in scores.items()}
    for method in preds["method"].unique():
        rows = preds[preds["method"] == method].set_index("fact_id")
        correct[f"base, {method}"] = rows.loc[order, "correct"].reset_index(drop=True)
    if "relation" in test.columns and "relation" in train.columns:  # the line a gain must clear
        consts = constant_answers(test, train)
        correct["constant answer"] = pd.Series([c is not None and is_correct(c, list(a), mode=bcfg.match_mode)
                                                for c, a in zip(consts, test["answers"])])
    return correct


def relation_results(correct: dict[str, pd.Series], relations: pd.Series, bcfg: Any) -> pd.DataFrame:
    """``accuracy_table`` per (method, relation): columns method, relation, accuracy, ci_low, ci_high, n;
    ``correct`` as ``method_correct`` returns it, ``relations`` the test facts' relation in the same order."""
    from massshift.studies.baselines import accuracy_table

    rel = relations.reset_index(drop=True).astype(str)
    parts = []
    for r in sorted(rel.unique()):
        keep = (rel == r).to_numpy()
        t = accuracy_table({m: v.reset_index(drop=True)[keep] for m, v in correct.items()}, n_boot=bcfg.n_boot,
                           ci=bcfg.ci, seed=bcfg.seed)
        parts.append(t.assign(relation=r))
    cols = ["method", "relation", "accuracy", "ci_low", "ci_high", "n"]
    return pd.concat(parts, ignore_index=True)[cols] if parts else pd.DataFrame(columns=cols)


def headline(summary: dict[str, Any]) -> dict[str, Any]:
    """The few numbers the demo prints: accuracies, gains, what the gain is made of, the redistribution share."""
    acc, gain, red = summary["accuracy"], summary["gain"], summary["redistribution"]
    return {"base_accuracy": acc["base"]["value"], "accuracy": acc["rl"]["value"],
            "absolute_gain": gain["absolute"]["value"], "relative_gain": gain["relative"]["value"],
            "redistribution_share": red["share_tail"]["value"], "n_new_greedy": red["n_new_greedy"],
            "from_tail": red["from_tail"], "from_absent": red["from_absent"], "criterion": summary["criterion"],
            "gain_kinds": {k: v["count"] for k, v in (summary.get("gain_decomposition") or {}).get("kinds", {}).items()},
            "collapse_warnings": summary.get("collapse_warnings", [])}
