"""``run_attribution``: the bucket runs, their held-out scores and the per-example scores, resumable.

Run directory ``OUT``:

- ``config.yaml``, ``env.json``; ``train_scores.parquet`` (base, n samples per training fact),
  ``buckets.csv``, ``bucket_sizes.csv``; ``base_test_scores.parquet``;
- ``runs/<name>/``: a GRPO run directory (``massshift.train.grpo``) plus ``test_scores.parquet``,
  ``transitions.csv`` and ``result.json``. A run whose ``result.json`` carries the same key
  (base weights, GRPO settings, seed, training and held-out fact ids) is skipped, so an
  interrupted study resumes at the first unfinished run. Only mixed runs keep ``final/``
  (the TracIn checkpoint) unless ``keep_models``;
- ``runs.csv``, ``gains.csv``, ``loo.csv``, ``zero_signal.csv``, ``transitions.csv``;
- ``tracin.parquet``, ``tracin_buckets.csv``, ``tracin_proj_<checkpoint>.npy``;
- ``figures/attribution.png|pdf``, ``summary.json``, ``report.md``.

Scoring of held-out facts is greedy and teacher-forced only (no samples): states use the
``logprob`` criterion, the same for the base and every run.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from massshift.configio import help_field
from massshift.lm.prompts import PromptConfig
from massshift.progress import progress_bar
from massshift.rundir import init_run_dir, write_csv, write_json, write_parquet, write_text
from massshift.seeds import derive_seed32
from massshift.studies.attribution import (
    BucketBounds,
    RunSpec,
    after_table,
    assign_buckets,
    bucket_sizes,
    dump,
    gain_table,
    loo_table,
    plan_runs,
    tracin_buckets,
    transition_summary,
    zero_signal_table,
)
from massshift.studies.attribution_report import answer_text, plot_attribution, report_markdown
from massshift.studies.tracin import TracInConfig
from massshift.train.grpo import GRPOConfig

logger = logging.getLogger(__name__)


def _default_grpo() -> GRPOConfig:
    # the demo's GRPO settings (lr 3e-4, 16 x 8, 8 new tokens), a shorter budget, no checkpoints
    return GRPOConfig(steps=60, batch_size=16, num_generations=8, lr=3e-4, max_new_tokens=8, save_every=0,
                      eval_every=0)


@dataclass(frozen=True)
class AttributionConfig:
    """Settings of an attribution study (all written to config.yaml; docs/attribution.md)."""

    n_samples: int = help_field(128, help="Base samples per training fact that define the buckets (paper: 128).")
    bounds: BucketBounds = help_field(help="Rare / medium upper bounds of the buckets.", default_factory=BucketBounds)
    sample_size: int = help_field(64, help="Facts per bucket per run (capped at the smallest usable bucket).")
    min_bucket: int = help_field(16, help="Buckets with fewer facts get no run.")
    seeds: tuple[int, ...] = help_field((0, 1, 2), help=(
        "One set of runs per seed (bucket samples and GRPO seed); the CIs come from them."))
    leave_one_out: bool = help_field(True, help="Also run mixed-without-each-bucket.")
    grpo: GRPOConfig = help_field(help="The GRPO settings of every run (its seed is replaced by the run's).",
                                  default_factory=_default_grpo)
    tracin: TracInConfig = help_field(help="Per-example score settings.", default_factory=TracInConfig)
    tracin_checkpoints: tuple[str, ...] = help_field(("base", "mixed"), help=(
        "Where the per-example scores are taken and summed: base and/or mixed (the first seed's mixed run)."))
    seed: int = help_field(0, help="Seeds the base samples.")
    test_limit: int = help_field(0, help="Held-out facts used (0: all; else a seeded sample).")
    score_batch_size: int = help_field(256, help="Teacher-forcing rows per pass (does not change the numbers).")
    keep_models: bool = help_field(False, help="Keep every run's final/ (by default only mixed runs keep it).")
    after_samples: int = help_field(32, help=(
        "Samples per training fact when bucket and mixed runs rescore their own training facts (0: skip)."))
    prompt: PromptConfig = help_field(help=(
        "The prompt of every scoring, training and gradient; the matcher is grpo.match_mode / grpo.max_words "
        "everywhere (reward and scoring alike)."), default_factory=PromptConfig)

    def __post_init__(self) -> None:
        if self.n_samples < 1:
            raise ValueError(f"n_samples must be >= 1 (buckets are made of sample counts), got {self.n_samples}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct and at least one, got {self.seeds}")
        bad = [c for c in self.tracin_checkpoints if c not in ("base", "mixed")]
        if bad:
            raise ValueError(f"tracin_checkpoints may hold 'base' and 'mixed', got {bad}")
        if self.test_limit < 0:
            raise ValueError(f"test_limit must be >= 0 (0: all held-out facts), got {self.test_limit}")

    @classmethod
    def quick(cls) -> AttributionConfig:
        """A small study for tests (well under 90 s on the quick demo world)."""
        return cls(n_samples=32, sample_size=12, min_bucket=4, seeds=(0, 1),
                   grpo=GRPOConfig(steps=6, batch_size=8, num_generations=4, lr=3e-4, max_new_tokens=8,
                                   save_every=0, eval_every=0),
                   tracin=TracInConfig(dim=256, max_test=48), test_limit=120, after_samples=8)


def _score_config(cfg: AttributionConfig, n_samples: int) -> Any:
    from massshift.lm.logprobs import ScoringConfig
    from massshift.lm.sampling import GenerationConfig
    from massshift.score.table import ScoreConfig

    return ScoreConfig(prompt=cfg.prompt, match=cfg.grpo.match_config(cfg.prompt.terminator), generation=GenerationConfig(n_samples=n_samples, temperature=cfg.grpo.temperature,
                                                   max_new_tokens=cfg.grpo.max_new_tokens, seed=cfg.seed),
                       scoring=ScoringConfig(batch_size=cfg.score_batch_size))


def _state_config() -> Any:
    from massshift.analysis.states import StateConfig

    return StateConfig(criterion="logprob")


def _zero_signal_counts(log: pd.DataFrame, train: pd.DataFrame, bucket_of: dict[str, str], grpo: GRPOConfig
                        ) -> list[dict[str, Any]]:
    """Groups and zero-variance groups per (training bucket, half of the run), from ``zero_var_fact_ids``.

    ``zero`` splits into ``zero_wrong`` (every completion rewarded 0 or less) and ``zero_right`` (every
    completion rewarded, e.g. all correct) when the log has ``zero_var_rewards``.
    """
    from massshift.train.common import batch_indices

    if "zero_var_fact_ids" not in log.columns:
        return []
    ids = list(train["fact_id"].astype(str))
    counts: dict[tuple[str, str], list[int]] = {}
    has_rewards = "zero_var_rewards" in log.columns
    for _, row in log.dropna(subset=["reward_mean"]).iterrows():
        s = int(row["step"]) - 1
        phase = "first half" if s < grpo.steps / 2 else "second half"
        zero_ids = list(row["zero_var_fact_ids"] or [])
        zero_r = list(row["zero_var_rewards"] or []) if has_rewards else [math.nan] * len(zero_ids)
        zero = dict(zip(zero_ids, zero_r))
        for i in batch_indices(len(ids), grpo.batch_size, grpo.seed, s):
            c = counts.setdefault((bucket_of[ids[i]], phase), [0, 0, 0])
            c[0] += 1
            if ids[i] in zero:
                c[1] += 1
                c[2] += bool(zero[ids[i]] > 0)
    return [{"bucket": b, "phase": p, "groups": g, "zero": z,
             "zero_wrong": z - r if has_rewards else None, "zero_right": r if has_rewards else None}
            for (b, p), (g, z, r) in sorted(counts.items())]


def run_one(spec: RunSpec, base: str, train: pd.DataFrame, test: pd.DataFrame, base_test: pd.DataFrame,
            bucket_of: dict[str, str], out: Path, cfg: AttributionConfig, base_key: str) -> dict[str, Any]:
    """Train, score and compare one run (or read its ``result.json`` when it is already finished)."""
    from massshift.analysis.estimators import Bootstrap, StatsConfig
    from massshift.analysis.states import assign_states
    from massshift.analysis.statistics import accuracy_and_gain, model_states, transition_table
    from massshift.analysis.transitions import merge_models
    from massshift.lm.loading import load_model
    from massshift.score.table import score_facts
    from massshift.train.grpo import train_grpo

    d = out / "runs" / spec.name
    grpo = dataclasses.replace(cfg.grpo, seed=spec.seed)
    key = derive_seed32(dump([base_key, grpo.to_dict(), spec.fact_ids, list(test["fact_id"]), cfg.score_batch_size,
                            *([cfg.prompt.to_dict()] if cfg.prompt != PromptConfig() else [])]))
    done = d / "result.json"
    if done.exists() and json.loads(done.read_text()).get("key") == key:
        logger.info("%s: finished earlier, reusing %s", spec.name, done)
        return json.loads(done.read_text())
    t0 = time.perf_counter()
    model, tok, _ = load_model(base)
    by_id = train.set_index("fact_id")
    facts = by_id.loc[list(spec.fact_ids)].reset_index()
    res = train_grpo(model, tok, facts, d, grpo, prompt=cfg.prompt)
    after = []
    if spec.kind in ("bucket", "mixed") and cfg.after_samples:
        own = score_facts(res.model, tok, facts, _score_config(cfg, cfg.after_samples), label="after")
        for bucket, grp in own.groupby(own["fact_id"].map(bucket_of), sort=False):
            after.append({"bucket": bucket, "n": len(grp), "greedy_correct": int(grp["greedy_correct"].sum()),
                          "accessible": int((grp["n_correct"] > 0).sum())})
    scores = score_facts(res.model, tok, test, _score_config(cfg, 0), label="rl")
    kept = scores[["fact_id", "greedy", "greedy_correct", "logp_gold"]]
    write_parquet(d / "test_scores.parquet", kept.assign(state=assign_states(scores, _state_config()).to_numpy()))
    merged = merge_models(base_test, scores)
    boot = Bootstrap(len(merged), StatsConfig(seed=spec.seed))
    acc = accuracy_and_gain(merged, boot)
    base_states, rl_states = model_states(merged, _state_config())
    write_csv(d / "transitions.csv", transition_table(base_states, rl_states, boot, "logprob"))
    log = res.log.dropna(subset=["reward_mean"])
    result = {
        "key": key, "name": spec.name, "kind": spec.kind, "bucket": spec.bucket, "seed": spec.seed,
        "n_train": len(spec.fact_ids), "acc_base": acc["accuracy"]["base"]["value"],
        "acc": acc["accuracy"]["rl"]["value"], "gain": acc["gain"]["absolute"]["value"],
        "gain_lo": acc["gain"]["absolute"]["ci"][0], "gain_hi": acc["gain"]["absolute"]["ci"][1],
        "zero_var_share": float(log["zero_var_share"].mean()), "reward_first5": float(log["reward_mean"].head(5).mean()),
        "reward_last5": float(log["reward_mean"].tail(5).mean()),
        "zero_signal": _zero_signal_counts(res.log, facts, bucket_of, grpo), "after_train": after,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    if not cfg.keep_models and spec.kind != "mixed":
        shutil.rmtree(d / "final", ignore_errors=True)
    write_json(done, result)
    return result


def _checked_facts(train_facts: pd.DataFrame, test_facts: pd.DataFrame,
                   cfg: AttributionConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The train and test facts, checked disjoint; the test facts cut to ``cfg.test_limit`` (seeded)."""
    from massshift.train.common import check_facts

    train, test = check_facts(train_facts, "train facts"), check_facts(test_facts, "test facts")
    overlap = set(train["fact_id"]) & set(test["fact_id"])
    if overlap:
        raise ValueError(f"{len(overlap)} fact ids are both in the train and the test facts (e.g. "
                         f"{sorted(overlap)[:3]}); split or dedup them first (massshift split / dedup)")
    if cfg.test_limit and len(test) > cfg.test_limit:
        test = test.sample(n=cfg.test_limit, random_state=cfg.seed).reset_index(drop=True)
    return train, test


def _base_scores(base: str, train: pd.DataFrame, test: pd.DataFrame, out: Path, cfg: AttributionConfig,
                 progress: bool | None) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, str]:
    """The base model's samples on the train facts (their buckets and bucket sizes) and its greedy scores on
    the test facts, written to ``out``; returns ``buckets, sizes, base_test, base_key``."""
    from massshift.lm.loading import load_model
    from massshift.score.table import score_facts

    model, tok, info = load_model(base)
    base_key = info.cache_key
    with progress_bar(len(train), "base samples (train)", enabled=progress) as adv:
        train_scores = score_facts(model, tok, train, _score_config(cfg, cfg.n_samples), label="base",
                                   model_key=base_key, cache_dir=out / "cache",
                                   on_facts=adv)
    write_parquet(out / "train_scores.parquet", train_scores.drop(columns=["token_logps"], errors="ignore"))
    buckets = train_scores[["fact_id", "question", "n_correct", "n_samples", "greedy_correct"]].copy()
    buckets["bucket"] = assign_buckets(train_scores, cfg.bounds).to_numpy()
    write_csv(out / "buckets.csv", buckets)
    sizes = bucket_sizes(buckets["bucket"])
    write_csv(out / "bucket_sizes.csv", sizes)
    logger.info("bucket sizes: %s", dict(zip(sizes["bucket"], sizes["n"])))
    with progress_bar(len(test), "base greedy (test)", enabled=progress) as adv:
        base_test = score_facts(model, tok, test, _score_config(cfg, 0), label="base", model_key=base_key,
                                cache_dir=out / "cache", on_facts=adv)
    write_parquet(out / "base_test_scores.parquet", base_test.drop(columns=["token_logps"], errors="ignore"))
    return buckets, sizes, base_test, base_key


def _tracin_table(base: str, train: pd.DataFrame, test: pd.DataFrame, bucket_of: dict[str, str], used: set[str],
                  out: Path, cfg: AttributionConfig, progress: bool | None) -> tuple[pd.DataFrame, dict[str, float]]:
    """Per-example scores of the train facts of the used buckets at each checkpoint (TracIn-CP with equal
    step sizes; summed by the caller), and each checkpoint's exact-vs-projected Pearson correlation."""
    import numpy as np

    from massshift.lm.loading import load_model
    from massshift.studies.tracin import tracin_scores

    pool = train[train["fact_id"].map(bucket_of).isin(used)].reset_index(drop=True)
    tracin = pool[["fact_id"]].assign(bucket=pool["fact_id"].map(bucket_of))
    pearson: dict[str, float] = {}
    for ck in cfg.tracin_checkpoints:
        path = base if ck == "base" else str(out / "runs" / f"mixed-s{cfg.seeds[0]}" / "final")
        if ck == "mixed" and not (Path(path) / "config.json").exists():
            logger.warning("tracin: no mixed run model at %s; skipping that checkpoint", path)
            continue
        m, t, _ = load_model(path)
        with progress_bar(len(pool), f"TracIn at {ck}", enabled=progress) as adv:
            res = tracin_scores(m, t, pool, test, cfg.grpo, cfg.tracin, prompt=cfg.prompt, on_facts=adv)
        sc = res.scores.set_index("fact_id").loc[tracin["fact_id"]].reset_index()
        tracin[f"score_{ck}"] = sc["score"].to_numpy()
        tracin[f"proj_{ck}"] = sc["score_proj"].to_numpy()
        tracin[f"zero_signal_{ck}"] = sc["zero_signal"].to_numpy()
        if res.train_proj is not None:
            np.save(out / f"tracin_proj_{ck}.npy", res.train_proj)
            ok = sc["score"] != 0
            if ok.sum() > 2:
                pearson[ck] = float(np.corrcoef(sc.loc[ok, "score"], sc.loc[ok, "score_proj"])[0, 1])
        del m
    return tracin, pearson


def _runs(specs: list[RunSpec], base: str, train: pd.DataFrame, test: pd.DataFrame, base_test: pd.DataFrame,
          bucket_of: dict[str, str], out: Path, cfg: AttributionConfig, base_key: str,
          progress: bool | None) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """Every planned GRPO run (``run_one``), then ``runs.csv``, ``transitions.csv`` and the tables built from
    them (gains, loo, zero_signal, train_after, transition_summary; each also written as CSV)."""
    results = []
    with progress_bar(len(specs), "GRPO runs", unit="runs", enabled=progress) as adv:
        for spec in specs:
            results.append(run_one(spec, base, train, test, base_test, bucket_of, out, cfg, base_key))
            adv(1)
    runs = pd.DataFrame([{k: v for k, v in r.items() if k not in ("zero_signal", "after_train", "key")}
                         for r in results])
    write_csv(out / "runs.csv", runs)
    trans = pd.concat([pd.read_csv(out / "runs" / r["name"] / "transitions.csv").assign(run=r["name"])
                       for r in results], ignore_index=True)
    write_csv(out / "transitions.csv", trans)
    tables = {"gains": gain_table(runs), "loo": loo_table(runs), "zero_signal": zero_signal_table(results),
              "train_after": after_table(results), "transition_summary": transition_summary(trans, runs)}
    for name, df in tables.items():
        write_csv(out / f"{name}.csv", df)
    return runs, tables


def run_attribution(base: str, train_facts: pd.DataFrame, test_facts: pd.DataFrame, out: str | Path,
                    config: AttributionConfig | None = None, progress: bool | None = None,
                    threads: int | None = None) -> dict[str, Any]:
    """The whole study into ``out`` (see the module docstring); returns the summary.

    ``summary["seconds"]`` is this call's wall time: a resumed study reports only what it ran.
    """
    from massshift.analysis.statistics import transition_table  # noqa: F401  (imported here so a missing extra fails early)
    from massshift.lm.runtime import set_threads

    cfg = config or AttributionConfig()
    out = Path(out)
    t_start = time.perf_counter()
    n_threads = set_threads(threads)
    train, test = _checked_facts(train_facts, test_facts, cfg)
    init_run_dir(out, {"command": "attribute", "base": base, "attribution": cfg, "threads": n_threads,
                       "n_train": len(train), "n_test": len(test)}, seed=cfg.seed, device="cpu")
    buckets, sizes, base_test, base_key = _base_scores(base, train, test, out, cfg, progress)
    specs, plan = plan_runs(buckets, cfg.sample_size, cfg.seeds, cfg.min_bucket, cfg.leave_one_out)
    write_json(out / "plan.json", {**plan, "runs": [{"name": s.name, "kind": s.kind, "bucket": s.bucket,
                                                     "seed": s.seed, "n_train": len(s.fact_ids)} for s in specs]})
    bucket_of = dict(zip(buckets["fact_id"].astype(str), buckets["bucket"]))
    runs, tables = _runs(specs, base, train, test, base_test, bucket_of, out, cfg, base_key, progress)
    gains, loo, zero, after, trans_sum = (tables[k] for k in ("gains", "loo", "zero_signal", "train_after",
                                                               "transition_summary"))

    tracin, pearson = _tracin_table(base, train, test, bucket_of, set(plan["used_buckets"]), out, cfg, progress)
    score_cols = [c for c in tracin.columns if c.startswith("score_")]
    tb, corr = None, None
    if score_cols:
        tracin["score_total"] = tracin[score_cols].sum(axis=1)
        tracin["zero_signal"] = tracin[[c for c in tracin.columns if c.startswith("zero_signal_")]].all(axis=1)
        write_parquet(out / "tracin.parquet", tracin)
        tb, corr = tracin_buckets(tracin, specs, gains, loo)
        write_csv(out / "tracin_buckets.csv", tb)

    fig = plot_attribution(sizes, gains, runs, loo)
    from massshift.report.plots import save_figure

    save_figure(fig, out / "figures", "attribution")
    summary = {
        "base": base, "n_train": len(train), "n_test": len(test), "n_samples": cfg.n_samples,
        "seeds": list(cfg.seeds), "prompt": cfg.prompt.to_dict(), "match_mode": cfg.grpo.match_mode,
        "per_bucket": plan["per_bucket"], "used_buckets": plan["used_buckets"],
        "skipped_buckets": plan["skipped_buckets"], "min_bucket": cfg.min_bucket,
        "bucket_sizes": dict(zip(sizes["bucket"], map(int, sizes["n"]))), "grpo": cfg.grpo.to_dict(),
        "eps": _state_config().threshold, "base_accuracy": float(base_test["greedy_correct"].mean()),
        "gains": gains.to_dict(orient="records"), "loo": loo.to_dict(orient="records"),
        "zero_signal": zero.to_dict(orient="records"), "train_after": after.to_dict(orient="records"),
        "after_samples": cfg.after_samples, "transition_summary": trans_sum.to_dict(orient="records"),
        "spearman": corr,
        "tracin_dim": cfg.tracin.dim, "tracin_projection_pearson": pearson.get("base"),
        "tracin_projection_pearson_by_checkpoint": pearson,
        "answer": answer_text(gains, loo, zero, after), "threads": n_threads,
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    write_json(out / "summary.json", summary)
    write_text(out / "report.md", report_markdown(summary, sizes, gains, loo, zero, tb, corr, trans_sum, after))
    return summary
