"""Rejection-sampling fine-tuning (RFT): SFT on the model's own correct answers.

One round, as in the paper's RFT baseline (and STaR / rejection sampling
fine-tuning, arXiv 2308.01825): sample ``n_samples`` completions per training
question from the current model (``massshift.lm.sampling``, seeded by
(seed, fact_id)), keep those the matcher accepts, drop duplicates (identical
token ids) per question, and run the SFT loop (``sft.train_on_examples``) on
the kept (prompt, completion) pairs. The completion ids are the sampled ids
themselves, stop token included; completions that hit ``max_new_tokens``
without a stop token are dropped even if their text matches, since training
on them would teach the model not to stop.

The run directory adds ``rft_samples.parquet`` (per question: samples,
correct, kept) to the SFT layout, and summary.json records how many
questions had at least one correct sample.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from massshift.configio import help_field
from massshift.data.matching import Matcher
from massshift.lm.prompts import PromptConfig, stop_texts
from massshift.lm.runtime import torch_threads
from massshift.lm.sampling import GenerationConfig, generate, stop_token_mask
from massshift.rundir import init_run_dir, write_json, write_parquet
from massshift.seeds import derive_seed
from massshift.train.common import TrainResult, check_facts, prompt_ids_for
from massshift.train.config import Check
from massshift.train.sft import Example, SFTConfig, train_on_examples

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RFTConfig(SFTConfig):
    """SFT settings plus the sampling of the training data (``max_new_tokens`` also bounds the samples)."""

    n_samples: int = help_field(8, help="Completions sampled per training question.")
    temperature: float = help_field(1.0, help="Sampling temperature of the training samples (0: greedy).")

    def checks(self) -> Iterable[Check]:
        yield from super().checks()
        yield self.n_samples >= 1, f"n_samples must be >= 1, got {self.n_samples}; try 8"
        yield self.temperature >= 0, f"temperature must be >= 0 (0: greedy), got {self.temperature}"

    def sft_config(self) -> SFTConfig:
        """The training part of this config."""
        return SFTConfig(**{f.name: getattr(self, f.name) for f in fields(SFTConfig)})


@dataclass(frozen=True)
class Sample:
    """One sampled completion of a training question, judged: its text, token ids (stop token included when
    it stopped), whether it ended with a stop token, and the matcher's verdict."""

    text: str
    ids: tuple[int, ...]
    finished: bool
    correct: bool


def sample_judged(model: torch.nn.Module, tokenizer: Any, facts: pd.DataFrame, prompt: PromptConfig,
                  config: RFTConfig, matcher: Matcher, stream: str = "rft") -> tuple[list[list[int]], list[list[Sample]]]:
    """``config.n_samples`` completions per question from ``model`` (seeded by (seed, ``stream``, fact_id)),
    each judged by ``matcher``; returns the prompt ids and the samples per question, in sample order."""
    prompts = prompt_ids_for(tokenizer, list(facts["question"]), prompt)
    gen_cfg = GenerationConfig(n_samples=config.n_samples, temperature=config.temperature,
                               max_new_tokens=config.max_new_tokens, seed=derive_seed(config.seed, stream))
    stops = stop_texts(prompt, tokenizer)
    gens = generate(model, prompts, list(facts["fact_id"]), tokenizer, gen_cfg, prompt.terminator, stops=stops)
    stop = stop_token_mask(tokenizer, prompt.terminator, stops=stops)
    judged = [[Sample(text, tuple(ids), bool(ids) and ids[-1] < len(stop) and bool(stop[ids[-1]]),
                      bool(matcher(text, list(answers))))
               for text, ids in zip(gen.samples, gen.sample_ids)]
              for answers, gen in zip(facts["answers"], gens)]
    return prompts, judged


def collect_correct(model: torch.nn.Module, tokenizer: Any, facts: pd.DataFrame, prompt: PromptConfig,
                    config: RFTConfig, matcher: Matcher) -> tuple[list[Example], pd.DataFrame]:
    """Sample, keep the correct finished completions, dedupe per question.

    Returns the examples and a table (fact_id, n_samples, n_correct, n_kept).
    """
    prompts, judged = sample_judged(model, tokenizer, facts, prompt, config, matcher)
    examples: list[Example] = []
    rows = []
    for fid, p, samples in zip(facts["fact_id"], prompts, judged):
        seen: set[tuple[int, ...]] = set()
        for s in samples:
            if s.correct and s.finished and s.ids not in seen:
                seen.add(s.ids)
                examples.append(Example(str(fid), tuple(p), s.ids))
        rows.append({"fact_id": str(fid), "n_samples": len(samples), "n_correct": sum(s.correct for s in samples),
                     "n_kept": len(seen)})
    return examples, pd.DataFrame(rows)


def train_rft(model: torch.nn.Module, tokenizer: Any, train_facts: pd.DataFrame, out_dir: str | Path,
              config: RFTConfig | None = None, eval_facts: pd.DataFrame | None = None,
              prompt: PromptConfig | None = None, matcher: Matcher | None = None, progress: bool = False,
              resume: bool = False) -> TrainResult:
    """Sample, filter by ``matcher`` (default: the config's match mode), SFT on the kept completions.

    With no correct sample at all, nothing is trained and ``final/`` is the unchanged model.
    """
    config = config or RFTConfig()
    prompt = prompt or PromptConfig()
    train = check_facts(train_facts, "train_facts")
    matcher = matcher or config.match_config(prompt.terminator).matcher()
    out = init_run_dir(out_dir, {"trainer": "rft", "rft": config.to_dict(), "prompt": prompt.to_dict()},
                       seed=config.seed, device=str(next(model.parameters()).device))
    with torch_threads(config.threads):
        model.eval()
        examples, table = collect_correct(model, tokenizer, train, prompt, config, matcher)
    write_parquet(out / "rft_samples.parquet", table)
    answered = int((table["n_correct"] > 0).sum())
    logger.info("RFT: %d of %d questions had a correct sample; %d distinct completions kept",
                answered, len(table), len(examples))
    if not examples:
        logger.warning("RFT: no correct sample to train on; the final model is the input model")
    result = train_on_examples(model, tokenizer, examples, out, config.sft_config(), eval_facts, prompt,
                               progress, resume, label="rft")
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    summary.update({"questions": len(table), "questions_with_correct": answered,
                    "samples_correct": int(table["n_correct"].sum()), "examples_kept": len(examples)})
    write_json(out / "summary.json", summary)
    return result
