"""``massshift demo``: the whole study on a synthetic world, on a laptop CPU, nothing downloaded.

Stages, each a run directory under ``OUT`` that is reused when its settings are
unchanged (an interrupted demo resumes from the finished stages):

1. ``world/``: invented people and facts, a pretraining corpus and a tokenizer;
2. ``pretrain/``: a ~1M-parameter Llama trained from scratch on the corpus;
3. ``split/``: a fact-level split by person: RL-train people vs held-out people;
4. ``scores/base*.parquet``: base scores on the held-out facts;
5. ``grpo/``: GRPO on the RL-train facts;
6. ``sft/``: the SFT baseline on the same facts and budget of examples;
7. ``compare-rl/`` and ``compare-sft/``: base -> RL and base -> SFT on the held-out facts;
8. ``results.csv``: held-out greedy accuracy with CIs of base, GRPO, SFT and the
   inference-time baselines of the base model (majority vote over n samples,
   k-shot with shots from the RL-train facts), like the paper's main table;
9. ``base.ckpt``, ``rl.ckpt``, ``sft.ckpt``: each model in one self-describing file with the held-out
   facts (``massshift compare base.ckpt rl.ckpt`` in ``OUT`` needs no other argument);
10. a three-line summary (accuracies, relative gain, redistribution share).

The defaults are a measured choice (docs/demo.md); ``--quick`` is a
smaller world and shorter runs for the tests.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from massshift.configio import help_field
from massshift.rundir import init_run_dir, write_csv, write_json, write_parquet
from massshift.score.distractors import DEFAULT_DISTRACTORS
from massshift.studies.pipeline import Stages, config_key, headline, method_results

logger = logging.getLogger(__name__)


def _world_config(quick: bool) -> Any:
    from massshift.synthetic.world import WorldConfig

    if quick:
        return WorldConfig(n_people=60, n_values=30, qa_share=0.3, default_noise=0.4, default_kind="nobody")
    return WorldConfig(n_people=300, n_values=60, qa_share=0.3, default_noise=0.4, default_kind="nobody")


def _pretrain_config(quick: bool) -> Any:
    from massshift.synthetic.pretrain import PretrainConfig

    if quick:
        return PretrainConfig(d_model=64, n_layers=2, n_heads=4, d_ff=128, max_steps=150, threads=None)
    return PretrainConfig(max_steps=700, threads=None)


def _grpo_config(quick: bool) -> Any:
    from massshift.train.grpo import GRPOConfig

    # lr 3e-4: chosen on the training reward, not on held-out facts (docs/demo.md)
    return GRPOConfig(steps=30 if quick else 100, batch_size=16, num_generations=8, lr=3e-4,
                      max_new_tokens=8, save_every=0 if quick else 25, eval_every=0 if quick else 25)


def _sft_config() -> Any:
    from massshift.train.sft import SFTConfig

    return SFTConfig(epochs=3, batch_size=16, lr=3e-4, max_new_tokens=8)  # the GRPO learning rate


@dataclass(frozen=True)
class DemoConfig:
    """Settings of the demo (written to OUT/config.yaml); the stage configs default to the measured
    choice of docs/demo.md, and every stage's seed is ``seed``."""

    seed: int = help_field(0, help="One seed for the world, pretraining, split, sampling and training.")
    quick: bool = help_field(False, help="A smaller world and shorter runs (for the tests).")
    test_size: float = help_field(0.5, help="Share of people held out from RL (their facts are the test facts).")
    n_samples: int = help_field(32, help="Samples per fact when scoring, and votes of the majority-vote baseline.")
    distractors: int = help_field(DEFAULT_DISTRACTORS, help=(
        "Values of the same relation scored per fact for the chance criterion (the headline criterion "
        "when there are any); 0 turns them off and the headline criterion is logprob."))
    world: Any = help_field(None, help="The WorldConfig (None: the demo world).")
    pretrain: Any = help_field(None, help="The PretrainConfig (None: the demo's pretraining).")
    grpo: Any = help_field(None, help="The GRPOConfig (None: the demo's GRPO run).")
    sft: Any = help_field(None, help="The SFTConfig of the SFT baseline (None: the demo's, at GRPO's learning rate).")
    threads: int | None = help_field(None, help="Torch CPU threads (None: the cores not already busy).")

    def __post_init__(self) -> None:
        if not 0 < self.test_size < 1:
            raise ValueError(f"test_size must be in (0, 1), got {self.test_size}")
        if self.n_samples < 1:
            raise ValueError(f"n_samples must be >= 1 (the sampling criterion needs samples), got {self.n_samples}")
        q = self.quick
        object.__setattr__(self, "world", replace(self.world or _world_config(q), seed=self.seed))
        object.__setattr__(self, "pretrain", replace(self.pretrain or _pretrain_config(q), seed=self.seed))
        object.__setattr__(self, "grpo", replace(self.grpo or _grpo_config(q), seed=self.seed))
        object.__setattr__(self, "sft", replace(self.sft or _sft_config(), seed=self.seed))


def run_demo(out: str | Path, config: DemoConfig | None = None, progress: bool = False) -> dict[str, Any]:
    """Run the demo into ``out``; returns a summary with both comparisons' headline numbers."""
    from massshift.lm.runtime import set_threads
    from massshift.synthetic.pretrain import pretrain
    from massshift.synthetic.world import build_world, write_world
    from massshift.train.grpo import train_grpo
    from massshift.train.sft import train_sft

    cfg = config or DemoConfig()
    out = Path(out)
    stages = Stages(out)
    threads = set_threads(cfg.threads)
    init_run_dir(out, {"command": "demo", "demo": cfg, "threads": threads}, seed=cfg.seed, device="cpu")
    k_world = config_key(cfg.world)
    world_dir = stages.run("world", k_world, lambda d: write_world(build_world(cfg.world), d))
    k_pre = config_key([k_world, cfg.pretrain])
    base_dir = stages.run("pretrain", k_pre, lambda d: pretrain(world_dir, d, cfg.pretrain, progress=progress))
    train, test, k_split = _split(stages, cfg, world_dir, k_world)
    grpo_dir = stages.run("grpo", config_key([k_pre, k_split, cfg.grpo]),
                          lambda d: _train(train_grpo, base_dir, train, test, d, cfg.grpo, progress))
    sft_dir = stages.run("sft", config_key([k_pre, k_split, cfg.sft]),
                         lambda d: _train(train_sft, base_dir, train, test, d, cfg.sft, progress))
    with stages.timed("scoring"):
        scores = {label: _score(out, cfg, test, model_dir, label)
                  for label, model_dir in (("base", base_dir), ("rl", grpo_dir / "final"), ("sft", sft_dir / "final"))}
    for name, table in scores.items():
        write_parquet(out / "scores" / f"{name}.parquet", table)
    with stages.timed("compare"):
        summaries = {label: _compare(out, cfg, scores["base"], scores[label], label, train) for label in ("rl", "sft")}
    with stages.timed("baselines"):
        results = results_table(base_dir, train, test,
                                {"base": scores["base"], "GRPO": scores["rl"], "SFT": scores["sft"]}, cfg)
        write_csv(out / "results.csv", results)
    with stages.timed("checkpoints"):
        ckpts = write_ckpts(out, {"base": base_dir, "rl": grpo_dir / "final", "sft": sft_dir / "final"}, test,
                            Path("split") / "test.jsonl")
    summary = {"timings_s": stages.finish(), "n_train_facts": len(train), "n_test_facts": len(test),
               "checkpoints": ckpts,
               "results": results.to_dict(orient="records"),
               "rl": headline(summaries["rl"]), "sft": headline(summaries["sft"]),
               "report": str(out / "compare-rl" / "report.md")}
    write_json(out / "summary.json", summary)
    return summary


def _split(stages: Stages, cfg: DemoConfig, world_dir: Path, k_world: str) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """The split stage (by person): the RL-train facts, the held-out test facts and the stage's key."""
    from massshift.data.facts import load_facts
    from massshift.data.split import split_facts, write_split

    def do_split(d: Path) -> None:
        res = split_facts(load_facts(world_dir / "facts.jsonl"), test_size=cfg.test_size, seed=cfg.seed,
                          group_by="subject")
        write_split(res, d, {"test_size": cfg.test_size, "seed": cfg.seed, "group_by": "subject"})

    key = config_key([k_world, cfg.test_size, cfg.seed])
    split_dir = stages.run("split", key, do_split)
    return load_facts(split_dir / "train.jsonl"), load_facts(split_dir / "test.jsonl"), key


def _score(out: Path, cfg: DemoConfig, test: pd.DataFrame, model_dir: Path, label: str) -> pd.DataFrame:
    """The score table of the model in ``model_dir`` on the test facts (cached under ``out/cache``)."""
    from massshift.lm.loading import load_model
    from massshift.lm.logprobs import ScoringConfig
    from massshift.lm.sampling import GenerationConfig
    from massshift.score.table import ScoreConfig, score_facts

    # 256 teacher-forcing rows per batch: a fact brings 21+ continuations with its distractors (batch size
    # never changes the numbers, tested)
    score_cfg = ScoreConfig(generation=GenerationConfig(n_samples=cfg.n_samples, max_new_tokens=8, seed=cfg.seed),
                            scoring=ScoringConfig(batch_size=256), distractors=cfg.distractors)
    model, tok, info = load_model(str(model_dir))
    return score_facts(model, tok, test, score_cfg, label=label, model_key=info.cache_key, cache_dir=out / "cache")


def _compare(out: Path, cfg: DemoConfig, base: pd.DataFrame, trained: pd.DataFrame, label: str,
             train: pd.DataFrame) -> dict[str, Any]:
    """``out/compare-<label>/``: the comparison report of base -> the trained model; returns its summary."""
    from massshift.analysis.estimators import StatsConfig
    from massshift.report.compare import CompareConfig, write_compare_report

    ccfg = CompareConfig(stats=StatsConfig(seed=cfg.seed), rl_label=label)
    return write_compare_report(base, trained, out / f"compare-{label}", ccfg,
                                extra_config={"command": "demo", "trained": label, "demo_dir": str(out)},
                                seed=cfg.seed, train_facts=train)


def _train(fn: Callable[..., Any], base_dir: Path, train: pd.DataFrame, test: pd.DataFrame, out: Path,
           config: Any, progress: bool) -> None:
    from massshift.lm.loading import load_model

    model, tok, _ = load_model(str(base_dir))
    model.train()
    fn(model, tok, train, out, config, eval_facts=test.sample(n=min(200, len(test)), random_state=0),
       progress=progress)


def write_ckpts(out: Path, models: dict[str, Path], test: pd.DataFrame, source: Path) -> dict[str, str]:
    """``out/<name>.ckpt`` for each model folder: self-describing files (``massshift.lm.ckpt``) that carry
    the held-out ``test`` facts, so ``massshift compare base.ckpt rl.ckpt`` in ``out`` needs no other argument."""
    from massshift.lm.ckpt import write_ckpt
    from massshift.lm.loading import load_model

    written = {}
    for name, folder in models.items():
        model, tok, _ = load_model(str(folder))
        path = write_ckpt(out / f"{name}.ckpt", model, tok, test, facts_source=str(source),
                          meta={"model": str(folder), "role": name})
        written[name] = str(path)
        logger.info("wrote %s (%s, with %d held-out facts)", path, folder, len(test))
    return written


def results_table(base_dir: Path, train: pd.DataFrame, test: pd.DataFrame, scores: dict[str, pd.DataFrame],
                  cfg: DemoConfig) -> pd.DataFrame:
    """Held-out greedy accuracy (with bootstrap CIs) of the trained models and the base model's baselines."""
    from massshift.studies.baselines import BaselineConfig

    bcfg = BaselineConfig(methods=("majority", "kshot"), n_samples=cfg.n_samples, max_new_tokens=8, shots=3,
                          seed=cfg.seed)
    return method_results(str(base_dir), train, test, scores, bcfg)
