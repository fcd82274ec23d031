"""Sweep of ``massshift demo`` worlds and training settings: which world gives RL a measurable held-out gain?

Each variant is a set of overrides of the demo's stage configs (world, pretrain,
grpo, sft); each (variant, seed) runs ``run_demo`` into ``ROOT/<variant>-s<seed>``.
A variant that only changes GRPO/SFT settings names a ``reuse`` variant: its
finished world/, pretrain/, split/ and cache/ are copied into the new dir first,
and run_demo reuses them because their stage keys match (the source dir is never
written to).

Everything runs on ``--threads`` torch threads (default 1): the DemoConfig, the
pretraining, GRPO and SFT configs all get it.

Collected per run (from summary.json, compare-rl/ and compare-sft/): base held-out
greedy accuracy, RL and SFT accuracy, absolute gain with its 95% CI, relative
gain, redistribution share (share_tail, n_new_greedy, from_tail, from_absent),
churn (gained/lost/net), the never-seen control (share of held-out facts with
popularity 0 whose base state is tail-correct), and wall times.

    .venv/bin/python benchmarks/sweep_demo.py --variants default no-noise --seeds 0 1
    .venv/bin/python benchmarks/sweep_demo.py --collect-only --csv docs/demo_sweep.csv --md /tmp/sweep/table.md
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import csv  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

# name -> overrides per stage; "reuse": copy world/pretrain/split/cache of that variant's run (same seed)
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "no-noise": {"world": {"default_noise": 0.0}},
    "qa-0.1": {"world": {"qa_share": 0.1}},
    "rl-300": {"grpo": {"steps": 300}, "reuse": "default"},
    "popular-default": {"world": {"default_kind": "popular"}},
    "d192": {"pretrain": {"d_model": 192, "d_ff": 384}},
    "exposure-1.0": {"world": {"exposure_exponent": 1.0}},
}

REUSED_STAGES = ("world", "pretrain", "split", "cache")


def build_config(name: str, seed: int, threads: int) -> Any:
    from massshift.studies.demo import DemoConfig, _grpo_config, _pretrain_config, _sft_config, _world_config

    ov = VARIANTS[name]
    world = replace(_world_config(False), **ov.get("world", {}))
    pre = replace(_pretrain_config(False), threads=threads, **ov.get("pretrain", {}))
    grpo = replace(_grpo_config(False), threads=threads, **ov.get("grpo", {}))
    sft = replace(_sft_config(), threads=threads, **ov.get("sft", {}))
    return DemoConfig(seed=seed, world=world, pretrain=pre, grpo=grpo, sft=sft, threads=threads)


def run_one(root: Path, name: str, seed: int, threads: int) -> Path:
    from massshift.studies.demo import run_demo

    out = root / f"{name}-s{seed}"
    src_name = VARIANTS[name].get("reuse")
    if src_name:
        src = root / f"{src_name}-s{seed}"
        if not (src / "summary.json").exists():
            raise SystemExit(f"{name}: run {src_name} seed {seed} first (its stages are reused)")
        for stage in REUSED_STAGES:
            if (src / stage).exists() and not (out / stage).exists():
                shutil.copytree(src / stage, out / stage)
    start = time.perf_counter()
    run_demo(out, build_config(name, seed, threads))
    wall = time.perf_counter() - start
    (out / "sweep.json").write_text(json.dumps({"variant": name, "seed": seed, "wall_s": round(wall, 1),
                                                "threads": threads, "overrides": VARIANTS[name]}, indent=2))
    return out


def _ci(d: dict[str, Any]) -> tuple[float, float, float]:
    lo, hi = d["ci"]
    return d["value"], lo, hi


def collect(run: Path) -> dict[str, Any]:
    import pandas as pd

    meta = json.loads((run / "sweep.json").read_text())
    summ = json.loads((run / "summary.json").read_text())
    row: dict[str, Any] = {"variant": meta["variant"], "seed": meta["seed"], "wall_s": meta["wall_s"]}
    for stage in ("pretrain", "grpo", "sft", "scoring", "total"):
        row[f"t_{stage}_s"] = summ["timings_s"].get(stage)
    row["n_test_facts"] = summ["n_test_facts"]
    for label in ("rl", "sft"):
        c = json.loads((run / f"compare-{label}" / "summary.json").read_text())
        row["base_acc"] = c["accuracy"]["base"]["value"]
        row[f"{label}_acc"] = c["accuracy"]["rl"]["value"]  # the trained side is keyed "rl" in both
        v, lo, hi = _ci(c["gain"]["absolute"])
        row[f"{label}_gain"], row[f"{label}_gain_lo"], row[f"{label}_gain_hi"] = v, lo, hi
        row[f"{label}_rel_gain"] = c["gain"]["relative"]["value"]
        red = c["redistribution"]
        row[f"{label}_share_tail"] = red["share_tail"]["value"]
        row[f"{label}_share_tail_lo"], row[f"{label}_share_tail_hi"] = red["share_tail"]["ci"]
        row[f"{label}_n_new_greedy"] = red["n_new_greedy"]
        row[f"{label}_from_tail"] = red["from_tail"]
        row[f"{label}_from_absent"] = red["from_absent"]
        for k in ("gained", "lost", "net"):
            row[f"{label}_churn_{k}"] = c["churn"][k]["value"]
    facts = pd.read_parquet(run / "compare-rl" / "facts.parquet", columns=["popularity", "state_base"])
    unseen = facts[facts["popularity"] == 0]
    row["n_unseen"] = len(unseen)
    row["unseen_tail_share"] = float((unseen["state_base"] == "tail-correct").mean()) if len(unseen) else float("nan")
    row["unseen_greedy_share"] = float((unseen["state_base"] == "greedy-correct").mean()) if len(unseen) else float("nan")
    seen = facts[facts["popularity"] > 0]
    row["seen_tail_share"] = float((seen["state_base"] == "tail-correct").mean()) if len(seen) else float("nan")
    # share of held-out greedy answers that are the relation's noise default (the prior RL can unlearn)
    defaults = json.loads((run / "world" / "values.json").read_text())["defaults"]
    for label in ("rl", "sft"):
        g = pd.read_parquet(run / f"compare-{label}" / "facts.parquet",
                            columns=["relation", "greedy_base", "greedy_rl", "popularity", "greedy_correct_base",
                                     "greedy_correct_rl"])
        new = ~g["greedy_correct_base"].astype(bool) & g["greedy_correct_rl"].astype(bool)
        # new greedy-correct facts the corpus never states (a guess of a popular value, not knowledge)
        row[f"{label}_new_greedy_never_seen"] = int((new & (g["popularity"] == 0)).sum())
        d = g["relation"].map(defaults).str.lower()
        if label == "rl":
            row["default_answer_base"] = float((g["greedy_base"].str.lower() == d).mean())
        row[f"default_answer_{label}"] = float((g["greedy_rl"].str.lower() == d).mean())
    # inference-time baselines of the base model (results.csv; only demos from commit 4d75d4a on write it)
    for prefix, suffix, key in (("base, majority", "", "base_majority_acc"), ("base, ", "-shot", "base_kshot_acc")):
        hits = [r["accuracy"] for r in summ.get("results", [])
                if r["method"].startswith(prefix) and r["method"].endswith(suffix)]
        row[key] = hits[0] if hits else float("nan")
    row["t_baselines_s"] = summ["timings_s"].get("baselines")
    gs = json.loads((run / "grpo" / "summary.json").read_text())
    for k in ("reward_first5", "reward_last5", "eval_accuracy_start", "eval_accuracy_end"):
        row[f"grpo_{k}"] = gs.get(k)
    return row


def _agg(vals: list[float], fmt: str) -> str:
    vals = [v for v in vals if v == v]
    if not vals:
        return "-"
    mean = sum(vals) / len(vals)
    if len(vals) == 1:
        return format(mean, fmt)
    return f"{format(mean, fmt)} ({format(min(vals), fmt)}..{format(max(vals), fmt)})"


TABLE_COLS = [  # (header, key, format)
    ("base acc", "base_acc", ".3f"),
    ("RL acc", "rl_acc", ".3f"),
    ("RL gain", "rl_gain", "+.3f"),
    ("RL rel", "rl_rel_gain", "+.2f"),
    ("RL share_tail", "rl_share_tail", ".2f"),
    ("RL churn +/-", None, None),
    ("SFT acc", "sft_acc", ".3f"),
    ("SFT gain", "sft_gain", "+.3f"),
    ("SFT rel", "sft_rel_gain", "+.2f"),
    ("SFT share_tail", "sft_share_tail", ".2f"),
    ("default ans base/RL/SFT", None, None),
    ("never-seen tail", "unseen_tail_share", ".2f"),
    ("seen tail", "seen_tail_share", ".2f"),
    ("base maj-vote", "base_majority_acc", ".3f"),
    ("base 3-shot", "base_kshot_acc", ".3f"),
    ("wall s", "wall_s", ".0f"),
]


def markdown(rows: list[dict[str, Any]]) -> str:
    order = list(VARIANTS)
    by: dict[str, list[dict[str, Any]]] = {}
    for r in sorted(rows, key=lambda r: (order.index(r["variant"]) if r["variant"] in order else 99, r["seed"])):
        by.setdefault(r["variant"], []).append(r)
    head = ["variant", "seeds"] + [h for h, _, _ in TABLE_COLS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, rs in by.items():
        cells = [name, str(len(rs))]
        for h, key, fmt in TABLE_COLS:
            if h.startswith("default ans"):
                m = [sum(r[k] for r in rs) / len(rs) for k in ("default_answer_base", "default_answer_rl",
                                                                "default_answer_sft")]
                cells.append("/".join(f"{x:.2f}" for x in m))
            elif key is None:
                g = sum(r["rl_churn_gained"] for r in rs) / len(rs)
                lo = sum(r["rl_churn_lost"] for r in rs) / len(rs)
                cells.append(f"+{g:.0f}/-{lo:.0f}")
            else:
                cells.append(_agg([r[key] for r in rs], fmt))
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Per run (absolute gains with 95% bootstrap CI):", "",
              "| run | RL gain [CI] | SFT gain [CI] | RL new greedy (tail/absent) | SFT new greedy (tail/absent) "
              "| RL churn gained/lost/net | never-seen n | RL/SFT new greedy never-seen | wall s |",
              "|---|---|---|---|---|---|---|---|---|"]
    for name, rs in by.items():
        for r in rs:
            lines.append(
                f"| {name}-s{r['seed']} | {r['rl_gain']:+.3f} [{r['rl_gain_lo']:+.3f}, {r['rl_gain_hi']:+.3f}] "
                f"| {r['sft_gain']:+.3f} [{r['sft_gain_lo']:+.3f}, {r['sft_gain_hi']:+.3f}] "
                f"| {r['rl_n_new_greedy']} ({r['rl_from_tail']}/{r['rl_from_absent']}) "
                f"| {r['sft_n_new_greedy']} ({r['sft_from_tail']}/{r['sft_from_absent']}) "
                f"| {r['rl_churn_gained']:.0f}/{r['rl_churn_lost']:.0f}/{r['rl_churn_net']:+.0f} "
                f"| {r['n_unseen']} | {r['rl_new_greedy_never_seen']}/{r['sft_new_greedy_never_seen']} "
                f"| {r['wall_s']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default="/tmp/sweep", help="run directories go to ROOT/<variant>-s<seed>")
    p.add_argument("--variants", nargs="+", default=["default", "no-noise", "qa-0.1"], choices=list(VARIANTS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--collect-only", action="store_true", help="only rebuild the CSV and table from ROOT")
    p.add_argument("--csv", default=None, help="CSV of all runs (default ROOT/sweep.csv)")
    p.add_argument("--md", default=None, help="markdown table (default ROOT/sweep.md)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    import torch

    torch.set_num_threads(args.threads)
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    if not args.collect_only:
        for name in args.variants:
            for seed in args.seeds:
                t = time.perf_counter()
                out = run_one(root, name, seed, args.threads)
                print(f"== {out.name}: {time.perf_counter() - t:.0f} s", flush=True)
    rows = [collect(d) for d in sorted(root.iterdir()) if (d / "sweep.json").exists() and (d / "summary.json").exists()]
    if not rows:
        print("no finished runs under", root)
        return 1
    csv_path = Path(args.csv or root / "sweep.csv")
    with csv_path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    md = markdown(rows)
    Path(args.md or root / "sweep.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
