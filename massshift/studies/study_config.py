"""The real-model study's settings (``massshift study countries``): sizes, trainers, learning-rate grid, seeds.

Three sizes; a field left unset takes the size's value:

| size | test / val / train facts | samples, distractors | training (each of GRPO, SFT, RFT, DPO) | lr | GRPO seeds |
|---|---|---|---|---|---|
| ``full`` (default) | 300 / 100 / 500 | 32, 10 | LoRA r 16, 40 steps of 8 questions (GRPO: x 8 completions) | grid 1e-4, 3e-4, 1e-3 chosen on validation | 3 |
| ``cpu`` | 80 / 32 / 64 | 6, 10 | full fine-tuning, 16 steps of 4 questions (x 4) | 2e-5 | 1 |
| ``quick`` | 24 / 16 / 16 | 4, 5 | full fine-tuning, 4 steps of 4 questions (x 4) | 2e-5 | 1 |

``full`` is the size the paper's question needs (issue 18): several hours on one CPU core, minutes on a GPU.
``cpu`` is what the first committed SmolLM2 study ran (about 30 minutes on one thread), ``quick`` what the
tests run. Every trainer gets the same budget: the same train facts, optimizer steps and questions per step.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from massshift.configio import help_field

TRAINERS = ("grpo", "sft", "rft", "dpo")
STUDIES = ("countries", "smollm2-countries")  # the second: the study's first name, kept as an alias
SIZES: dict[str, dict[str, Any]] = {
    "full": {"n_test": 300, "n_val": 100, "n_train": 500, "n_samples": 32, "distractors": 10,
             "lr_grid": (1e-4, 3e-4, 1e-3), "grpo_seeds": 3, "cot_tokens": 128},
    "cpu": {"n_test": 80, "n_val": 32, "n_train": 64, "n_samples": 6, "distractors": 10, "lr_grid": (),
            "grpo_seeds": 1, "cot_tokens": 128},
    "quick": {"n_test": 24, "n_val": 16, "n_train": 16, "n_samples": 4, "distractors": 5, "lr_grid": (),
              "grpo_seeds": 1, "cot_tokens": 32},
}


def trainer_configs(size: str) -> dict[str, Any]:
    """The four trainers' configs at a size (module table); seeds and threads are set by ``StudyConfig``."""
    from massshift.train.dpo import DPOConfig
    from massshift.train.grpo import GRPOConfig
    from massshift.train.rft import RFTConfig
    from massshift.train.sft import SFTConfig

    if size == "full":
        common = {"steps": 40, "batch_size": 8, "lr": 3e-4, "lora_r": 16, "max_new_tokens": 12}
        return {"grpo": GRPOConfig(num_generations=8, save_every=0, eval_every=0, **common),
                "sft": SFTConfig(**common), "rft": RFTConfig(n_samples=8, **common),
                "dpo": DPOConfig(n_samples=8, **common)}
    steps = 4 if size == "quick" else 16
    # the cpu size: 16 steps x 4 questions, each of the 64 train facts once; lr 2e-5, full fine-tuning, not
    # tuned (docs/country-study.md says why)
    common = {"batch_size": 4, "lr": 2e-5, "max_new_tokens": 12}
    return {"grpo": GRPOConfig(steps=steps, num_generations=4, save_every=0, eval_every=0, **common),
            "sft": SFTConfig(epochs=1, **common), "rft": RFTConfig(epochs=1, n_samples=4, **common),
            "dpo": DPOConfig(steps=steps, n_samples=4, **common)}


@dataclass(frozen=True)
class StudyConfig:
    """Settings of the study (written to OUT/config.yaml); unset sizes come from ``size`` (module table), and
    the trainers' seed and threads are the study's."""

    name: str = help_field("countries", help=f"The study ({', '.join(STUDIES)}).")
    seed: int = help_field(0, help="One seed for the split, sampling and training (GRPO's extra seeds: seed + k).")
    size: str = help_field("full", help="full, cpu or quick: the sizes and budgets of the module table.")
    quick: bool = help_field(False, help="The same as size='quick' (for the tests; a few minutes on one thread).")
    model: str = help_field("smollm2-135m", help="The checkpoint studied (a load_model spec).")
    facts: tuple[str, ...] = help_field(default_factory=tuple, help=(
        "Fact files (any massshift.data.facts format, e.g. PopQA's parquet), joined; empty: the built-in country "
        "facts (data.countries)."))
    n_test: int | None = help_field(None, help="Held-out test facts kept after the split.")
    n_val: int | None = help_field(None, help="Validation facts: the prompt, matching and learning rate are chosen on them.")
    n_train: int | None = help_field(None, help="RL-train facts, shared by every trainer.")
    n_samples: int | None = help_field(None, help="Samples per test fact when scoring, and majority-vote votes.")
    distractors: int | None = help_field(None, help="Values of the same relation scored per test fact (chance criterion).")
    lr_grid: tuple[float, ...] | None = help_field(None, help=(
        "Learning rates tried by every trainer, each chosen on validation greedy accuracy (ties: the earlier); "
        "empty: the trainer config's lr."))
    grpo_seeds: int | None = help_field(None, help="GRPO runs at the chosen learning rate, seeds seed .. seed + k - 1.")
    cot_tokens: int | None = help_field(None, help="Most reasoning tokens of the chain-of-thought baseline.")
    trainers: tuple[str, ...] = help_field(TRAINERS, help=(
        "The training methods run (GRPO always; of sft, rft, dpo): a second model family where the CPU budget "
        "fits GRPO but not every baseline; a later run with more reuses the stages already trained."))
    controls: int | None = help_field(None, help=(
        "Never-seen control questions per relation scored with the test facts (data.controls; kept out of every "
        "accuracy, reported in each compare); None: the default count, 0: none."))
    max_new_tokens: int = help_field(16, help="Longest generated answer when scoring and choosing the prompt.")
    grpo: Any = help_field(None, help="The GRPOConfig (None: the size's).")
    sft: Any = help_field(None, help="The SFTConfig (None: the size's, with GRPO's budget).")
    rft: Any = help_field(None, help="The RFTConfig (None: the size's, with GRPO's budget).")
    dpo: Any = help_field(None, help="The DPOConfig (None: the size's, GRPO's optimizer steps over the pairs).")
    threads: int | None = help_field(None, help="Torch CPU threads (None: the cores not already busy).")
    base_only: bool = help_field(False, help=(
        "Stop after choosing the prompt and scoring the base model (a second model family where the CPU "
        "budget allows no training)."))

    def __post_init__(self) -> None:
        if self.name not in STUDIES:
            raise ValueError(f"unknown study {self.name!r}; known: {', '.join(STUDIES)}")
        size = "quick" if self.quick else self.size
        if size not in SIZES:
            raise ValueError(f"StudyConfig.size must be one of {', '.join(SIZES)}, got {self.size!r}")
        object.__setattr__(self, "size", size)
        object.__setattr__(self, "quick", size == "quick")
        object.__setattr__(self, "facts", tuple(str(f) for f in self.facts))
        for f, v in SIZES[size].items():
            if getattr(self, f) is None:
                object.__setattr__(self, f, v)
        object.__setattr__(self, "lr_grid", tuple(float(x) for x in self.lr_grid))
        trainers = tuple(str(t) for t in ([self.trainers] if isinstance(self.trainers, str) else self.trainers))
        unknown = [t for t in trainers if t not in TRAINERS]
        if unknown:
            raise ValueError(f"StudyConfig.trainers: unknown {', '.join(unknown)}; known: {', '.join(TRAINERS)}")
        object.__setattr__(self, "trainers", tuple(t for t in TRAINERS if t == "grpo" or t in trainers))
        for f in ("n_test", "n_val", "n_train", "n_samples", "grpo_seeds", "cot_tokens"):
            if getattr(self, f) < 1:
                raise ValueError(f"StudyConfig.{f} must be >= 1, got {getattr(self, f)}")
        if any(x <= 0 for x in self.lr_grid):
            raise ValueError(f"StudyConfig.lr_grid must hold learning rates > 0, got {list(self.lr_grid)}")
        defaults = trainer_configs(size)
        for name in ("grpo", "sft", "rft", "dpo"):
            tcfg = getattr(self, name) or defaults[name]
            object.__setattr__(self, name, replace(tcfg, seed=self.seed, threads=self.threads))
