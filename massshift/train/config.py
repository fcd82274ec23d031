"""What every trainer's settings share: one base config, each trainer adds only its own fields.

``TrainConfig`` holds the optimizer (lr, clipping, weight decay), the seed, the checkpoint and
evaluation cadence, the answer matcher, LoRA and CPU threads. ``GRPOConfig``
(``massshift.train.grpo``), ``SFTConfig`` (``massshift.train.sft``) and ``RFTConfig``
(``massshift.train.rft``) subclass it; a trainer whose default differs redeclares the field with
``TrainConfig.default_for`` so the help text still lives once, here. All configs are frozen,
validated when built (errors name the field and a valid value) and loadable from YAML
(``ConfigIO``); every field is written to the run's config.yaml.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from massshift.configio import ConfigIO, field_help, help_field
from massshift.data.matching import MatchConfig

Check = tuple[bool, str]


@dataclass(frozen=True)
class TrainConfig(ConfigIO):
    """Settings every trainer shares (subclasses add their own and may change a default)."""

    batch_size: int = help_field(16, help="Training examples per optimizer step.")
    lr: float = help_field(1e-5, help=(
        "AdamW learning rate, constant, no warmup (1e-5 suits real models; tiny test models need ~1e-3)."))
    max_grad_norm: float = help_field(1.0, help="Clip the gradient norm to this value before each optimizer step.")
    weight_decay: float = help_field(0.0, help="AdamW weight decay.")
    seed: int = help_field(0, help="Seeds the data order, the sampling and the RNG state stored in checkpoints.")
    save_every: int = help_field(0, help="Write a checkpoint every this many steps (0: only the final model).")
    eval_every: int = help_field(0, help=(
        "Greedy accuracy on the eval facts every this many steps (0: only at the start and the end)."))
    max_new_tokens: int = help_field(16, help=(
        "Most generated tokens per answer when sampling and evaluating (too few silently zeroes rewards, "
        "TRL issue 5697)."))
    match_mode: str = help_field("exact", help=(
        "How answers are judged: 'exact' (normalised equality with an alias) or 'contains' (an alias as a "
        "whole-word span, for models that answer in sentences)."))
    max_words: int = help_field(12, help="Under 'contains', a prediction longer than this many words is wrong.")
    lora_r: int = help_field(0, help="LoRA rank on all linear layers (0: full fine-tuning).")
    lora_alpha: float = help_field(16.0, help="LoRA alpha (the adapter's scale is alpha / r).")
    threads: int | None = help_field(None, help="Torch CPU threads during training (unset: leave the current setting).")

    @classmethod
    def default_for(cls, name: str, default: Any) -> Any:
        """A field redeclared with another default, keeping the base field's help text."""
        return help_field(default, help=field_help(TrainConfig, name))

    def checks(self) -> Iterable[Check]:
        """(condition, message) pairs; a subclass yields its own, then ``super().checks()``."""
        yield self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"
        yield self.lr > 0, f"lr must be > 0, got {self.lr}; try 1e-5"
        yield self.max_grad_norm > 0, f"max_grad_norm must be > 0, got {self.max_grad_norm}; the usual value is 1.0"
        yield self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"
        yield self.seed >= 0, f"seed must be >= 0, got {self.seed}"
        yield self.save_every >= 0, f"save_every must be >= 0 (0: final model only), got {self.save_every}"
        yield self.eval_every >= 0, f"eval_every must be >= 0 (0: start and end only), got {self.eval_every}"
        yield self.max_new_tokens >= 1, f"max_new_tokens must be >= 1, got {self.max_new_tokens}"
        yield (self.match_mode in ("exact", "contains"),
               f"match_mode must be 'exact' or 'contains', got {self.match_mode!r}")
        yield self.max_words >= 1, f"max_words must be >= 1, got {self.max_words}"
        yield self.lora_r >= 0, f"lora_r must be >= 0 (0: full fine-tuning), got {self.lora_r}"
        yield self.lora_alpha > 0, f"lora_alpha must be > 0, got {self.lora_alpha}"
        yield (self.threads is None or self.threads >= 1,
               f"threads must be unset or >= 1, got {self.threads}")

    def __post_init__(self) -> None:
        for ok, msg in self.checks():
            if not ok:
                raise ValueError(f"{type(self).__name__}: {msg}")

    def match_config(self, terminator: str = "\n") -> MatchConfig:
        """The answer matcher's settings."""
        return MatchConfig(mode=self.match_mode, max_words=self.max_words, terminator=terminator)  # type: ignore[arg-type]
