"""The study's training stages: every trainer over the learning-rate grid, the choice on validation, GRPO's seeds.

For each trainer (GRPO, SFT, RFT, DPO; ``trainers``) and each learning rate of ``StudyConfig.lr_grid``
(or the trainer config's own when the grid is empty) one run is trained on the train facts, its greedy
accuracy on the validation facts measured at the end (the trainers' ``eval_facts``); the run with the
highest validation accuracy is the method's model (ties: the earlier learning rate of the grid). Test facts
are never looked at. GRPO is then trained again at its chosen learning rate with seeds seed + 1 ..
seed + grpo_seeds - 1. Every run is a stage (``pipeline.Stages``), reused when its settings are unchanged;
``lr_selection.csv`` holds every run's validation accuracy and which was chosen.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd

from massshift.data.matching import contains_reward, relation_values
from massshift.studies.pipeline import Stages, config_key

logger = logging.getLogger(__name__)

LABELS = {"base": "base, zero-shot greedy", "grpo": "GRPO", "sft": "SFT", "rft": "RFT", "dpo": "DPO"}


def method_label(name: str) -> str:
    """The results table's name of a trained model: ``grpo`` -> GRPO, ``grpo-seed2`` -> GRPO (seed 2)."""
    if name.startswith("grpo-seed"):
        return f"GRPO (seed {name.removeprefix('grpo-seed')})"
    return LABELS[name]


def trainers(cfg: Any, mode: str, everything: pd.DataFrame) -> dict[str, tuple[Any, Any, dict[str, Any]]]:
    """name -> (trainer, its config under the chosen matching, its extra arguments); under ``contains`` the
    reward and the verdict RFT and DPO filter by carry the anti-hedging rule."""
    from massshift.train.dpo import train_dpo
    from massshift.train.grpo import train_grpo
    from massshift.train.rft import train_rft
    from massshift.train.sft import train_sft

    reward = contains_reward(relation_values(everything)) if mode == "contains" else None
    verdict = (lambda t, a: reward(t, a) > 0) if reward else None
    return {
        "grpo": (train_grpo, replace(cfg.grpo, match_mode=mode), {"reward_fn": reward}),
        "sft": (train_sft, replace(cfg.sft, match_mode=mode), {}),
        "rft": (train_rft, replace(cfg.rft, match_mode=mode), {"matcher": verdict}),
        "dpo": (train_dpo, replace(cfg.dpo, match_mode=mode), {"matcher": verdict}),
    }


def train_methods(stages: Stages, cfg: Any, mode: str, everything: pd.DataFrame, train: pd.DataFrame,
                  val: pd.DataFrame, prompt: Any, key_parts: list[Any], progress: bool) -> tuple[dict[str, Path], pd.DataFrame]:
    """Train every method over the grid and GRPO's extra seeds (module docstring); returns name -> run
    directory of each model to score (``grpo``, ``grpo-seedK``, ``sft``, ``rft``, ``dpo``) and the selection
    table (method, lr, seed, run, val_accuracy, chosen)."""
    from massshift.lm.loading import load_model

    def run(stage: str, name: str, fn: Any, tcfg: Any, extra: dict[str, Any]) -> Path:
        def do_train(d: Path) -> None:
            m, tk, _ = load_model(cfg.model)
            m.train()
            fn(m, tk, train, d, tcfg, eval_facts=val, prompt=prompt, progress=progress, **extra)

        return stages.run(stage, config_key([*key_parts, mode, tcfg, name]), do_train)

    dirs: dict[str, Path] = {}
    rows: list[dict[str, Any]] = []
    for name, (fn, tcfg, extra) in trainers(cfg, mode, everything).items():
        if name not in cfg.trainers:
            continue
        grid = cfg.lr_grid or (tcfg.lr,)
        tried = []
        for lr in grid:
            stage = f"{name}-lr{lr:g}" if cfg.lr_grid else name
            d = run(stage, name, fn, replace(tcfg, lr=lr), extra)
            tried.append((lr, d, _val_accuracy(d)))
        best = max(range(len(tried)), key=lambda i: (-1.0 if pd.isna(tried[i][2]) else tried[i][2], -i))
        logger.info("%s: learning rate %g chosen on validation (accuracy %.3f)", name, tried[best][0], tried[best][2])
        rows += [{"method": method_label(name), "lr": lr, "seed": tcfg.seed, "run": d.name, "val_accuracy": acc,
                  "chosen": i == best} for i, (lr, d, acc) in enumerate(tried)]
        dirs[name] = tried[best][1]
        if name == "grpo":
            for k in range(1, cfg.grpo_seeds):
                seeded = replace(tcfg, lr=tried[best][0], seed=cfg.seed + k)
                d = run(f"grpo-seed{cfg.seed + k}", name, fn, seeded, extra)
                dirs[f"grpo-seed{cfg.seed + k}"] = d
                rows.append({"method": method_label(f"grpo-seed{cfg.seed + k}"), "lr": tried[best][0],
                             "seed": cfg.seed + k, "run": d.name, "val_accuracy": _val_accuracy(d), "chosen": True})
    return dirs, pd.DataFrame(rows)


def _val_accuracy(run_dir: Path) -> float:
    """The run's greedy accuracy on the validation facts after training (its summary's ``eval_accuracy_end``)."""
    acc = json.loads((run_dir / "summary.json").read_text(encoding="utf-8")).get("eval_accuracy_end")
    return float(acc) if acc is not None else float("nan")


def seed_spread(results: pd.DataFrame, base_method: str) -> dict[str, Any] | None:
    """Mean and spread of GRPO's held-out accuracy and gain over its seeds (None with one seed)."""
    rows = results[results["method"].str.match(r"^GRPO( \(seed \d+\))?$")]
    if len(rows) < 2:
        return None
    base = float(results.loc[results["method"] == base_method, "accuracy"].iloc[0])
    acc = rows["accuracy"].astype(float)
    return {"methods": rows["method"].tolist(), "accuracy": acc.tolist(), "mean": float(acc.mean()),
            "sd": float(acc.std(ddof=1)), "min": float(acc.min()), "max": float(acc.max()),
            "gain_mean": float(acc.mean() - base), "gain_sd": float((acc - base).std(ddof=1))}
