"""Supervised fine-tuning on gold answers: the paper's SFT baseline, and the engine behind RFT.

The loss is the token-level mean cross-entropy of the continuation tokens
(``" {answer}"`` plus the terminator, so the model learns to stop) given the
prompt, over every continuation token of the batch. Prompt and continuation
are tokenised together and split at the boundary (``prompts.encode_pair``),
so the trained tokens are exactly those the model generates; the first alias
is the target. AdamW at a constant learning rate, gradient clipping, dropout
off; batches come from a per-epoch shuffle seeded by (seed, epoch), so a
resumed run sees the batches an uninterrupted one would. The run directory
has the GRPO trainer's layout (config.yaml, env.json, train_log.jsonl,
checkpoints/step-N, final/, figures/training.png, summary.json).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from massshift.configio import help_field
from massshift.lm.prompts import PromptConfig, build_prompt, continuation, encode_pair
from massshift.lm.runtime import torch_threads
from massshift.rundir import init_run_dir, write_json
from massshift.train.common import (
    TrainResult,
    apply_lora,
    batch_indices,
    check_facts,
    completion_logprobs,
    greedy_accuracy,
    loss_run_summary,
    make_optimizer,
    save_final,
    training_loop,
)
from massshift.train.config import Check, TrainConfig

logger = logging.getLogger(__name__)

SFTResult = TrainResult


@dataclass(frozen=True)
class SFTConfig(TrainConfig):
    """Settings of an SFT run: the shared ``TrainConfig`` fields plus the length of training."""

    epochs: int = help_field(3, help="Passes over the training examples (used when steps is 0).")
    steps: int = help_field(0, help="Optimizer steps (0: epochs x ceil(examples / batch_size)).")

    def checks(self) -> Iterable[Check]:
        yield self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"
        yield self.steps >= 0, f"steps must be >= 0 (0: use epochs), got {self.steps}"
        yield from super().checks()

    def total_steps(self, n_examples: int) -> int:
        """Optimizer steps for ``n_examples`` examples."""
        return self.steps or self.epochs * math.ceil(n_examples / self.batch_size)


@dataclass(frozen=True)
class Example:
    """One training pair: prompt ids and the target continuation ids (terminator included)."""

    fact_id: str
    prompt_ids: tuple[int, ...]
    target_ids: tuple[int, ...]


def gold_examples(tokenizer: Any, facts: pd.DataFrame, prompt: PromptConfig) -> list[Example]:
    """One example per fact: the prompt and the first alias's continuation (``prompts.encode_pair``)."""
    out = []
    for fid, q, answers in zip(facts["fact_id"], facts["question"], facts["answers"]):
        p, c = encode_pair(tokenizer, build_prompt(q, prompt, tokenizer), continuation(answers[0], prompt, tokenizer), prompt)
        out.append(Example(str(fid), tuple(p), tuple(c)))
    return out


def sft_loss(model: torch.nn.Module, examples: Sequence[Example], pad_id: int) -> tuple[torch.Tensor, int]:
    """Mean cross-entropy over every target token of ``examples``; returns (loss, number of tokens)."""
    logp, mask, _ = completion_logprobs(model, [e.prompt_ids for e in examples],
                                        [e.target_ids for e in examples], pad_id)
    n = int(mask.sum())
    return -(logp * mask).sum() / n, n


def train_on_examples(model: torch.nn.Module, tokenizer: Any, examples: Sequence[Example], out: Path,
                      config: SFTConfig, eval_facts: pd.DataFrame | None, prompt: PromptConfig,
                      progress: bool = False, resume: bool = False, label: str = "sft") -> TrainResult:
    """The SFT loop on prepared examples in the run directory ``out`` (config.yaml already written)."""
    evals = check_facts(eval_facts, "eval_facts") if eval_facts is not None else None
    matcher = config.match_config(prompt.terminator).matcher()
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    steps = config.total_steps(len(examples)) if examples else 0
    with torch_threads(config.threads):
        model.eval()
        if config.lora_r > 0:
            model = apply_lora(model, config.lora_r, config.lora_alpha)
        optimizer = make_optimizer(model, config.lr, config.weight_decay)
        params = [p for p in model.parameters() if p.requires_grad]

        def step_fn(s: int) -> dict[str, Any]:
            t0 = time.perf_counter()
            idx = batch_indices(len(examples), config.batch_size, config.seed, s)
            optimizer.zero_grad(set_to_none=True)
            loss, n_tokens = sft_loss(model, [examples[i] for i in idx], pad_id)
            loss.backward()
            norm = float(torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm))
            optimizer.step()
            return {"step": s + 1, "epoch": (s * config.batch_size) // len(examples), "loss": float(loss.detach()),
                    "grad_norm": norm, "tokens": n_tokens, "seconds": time.perf_counter() - t0}

        def eval_fn() -> float:
            return greedy_accuracy(model, tokenizer, evals, prompt, matcher, config.max_new_tokens)

        loop = training_loop(model=model, tokenizer=tokenizer, optimizer=optimizer, out=out, steps=steps,
                             step_fn=step_fn, eval_fn=eval_fn if evals is not None else None,
                             save_every=config.save_every, eval_every=config.eval_every, resume=resume,
                             progress=progress, label=label, show="loss")
        final, model = save_final(model, tokenizer, out)
    frame, tail = loss_run_summary(out)
    write_json(out / "summary.json", {
        "trainer": label, "steps": steps, "examples": len(examples), "resumed_from": loop.start or None,
        "steps_per_second": (steps - loop.start) / loop.seconds if loop.seconds > 0 and steps else None,
        **tail, "final": str(final), "lora": config.lora_r > 0,
    })
    return TrainResult(log=frame, final_path=final, out_dir=out, model=model)


def train_sft(model: torch.nn.Module, tokenizer: Any, train_facts: pd.DataFrame, out_dir: str | Path,
              config: SFTConfig | None = None, eval_facts: pd.DataFrame | None = None,
              prompt: PromptConfig | None = None, progress: bool = False, resume: bool = False) -> TrainResult:
    """Fine-tune ``model`` on the gold answers (first alias) of ``train_facts``; writes ``out_dir``."""
    config = config or SFTConfig()
    prompt = prompt or PromptConfig()
    train = check_facts(train_facts, "train_facts")
    out = init_run_dir(out_dir, {"trainer": "sft", "sft": config.to_dict(), "prompt": prompt.to_dict()},
                       seed=config.seed, device=str(next(model.parameters()).device))
    examples = gold_examples(tokenizer, train, prompt)
    return train_on_examples(model, tokenizer, examples, out, config, eval_facts, prompt, progress, resume)
