"""Direct preference optimisation (DPO) on the model's own samples: the paper's third training baseline.

Pairs come from the model being trained, before training: ``n_samples`` completions per training question
(``rft.sample_judged``, seeded by (seed, "dpo", fact_id)), judged by the matcher. A question gives up to
``pairs_per_question`` pairs, the i-th distinct correct finished completion against the i-th distinct
incorrect one, in sample order; a question with no correct or no incorrect sample gives none (the paper's
pairs: a correct against an incorrect answer of the same question).

The loss is DPO's sigmoid loss (Rafailov et al. 2023),

    -log sigmoid(beta * ((log pi(c) - log ref(c)) - (log pi(r) - log ref(r)))),

where log pi(y) is the teacher-forced log-probability of the whole completion (sum over its tokens, stop
token included; the kernel is ``common.completion_logprobs``) and ``ref`` is the model before training.
The reference log-probs are computed once, before any update, and stored with the pairs, so the policy
starts at loss log 2 exactly and a resumed run reuses them. Training is the SFT loop's: batches of pairs in
a per-epoch shuffle seeded by (seed, epoch), AdamW, clipping, LoRA optional, the trainers' run directory
plus ``dpo_pairs.parquet`` (fact_id, chosen and rejected text and ids, reference log-probs).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F

from massshift.configio import help_field
from massshift.data.matching import Matcher
from massshift.lm.prompts import PromptConfig
from massshift.lm.runtime import torch_threads
from massshift.rundir import init_run_dir, write_json, write_parquet
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
from massshift.train.config import Check
from massshift.train.rft import RFTConfig, sample_judged

logger = logging.getLogger(__name__)

PAIRS_FILE = "dpo_pairs.parquet"


@dataclass(frozen=True)
class DPOConfig(RFTConfig):
    """RFT's settings (sampling the training data, then epochs or steps over it) plus DPO's own."""

    beta: float = help_field(0.1, help="DPO's beta: the scale of the implicit reward (higher: stay closer to the "
                                       "reference model).")
    pairs_per_question: int = help_field(1, help="Most (correct, incorrect) pairs taken from one question's samples.")

    def checks(self) -> Iterable[Check]:
        yield from super().checks()
        yield self.beta > 0, f"beta must be > 0, got {self.beta}; the usual value is 0.1"
        yield self.pairs_per_question >= 1, f"pairs_per_question must be >= 1, got {self.pairs_per_question}"


@dataclass(frozen=True)
class Pair:
    """One preference pair: the prompt, a correct (chosen) and an incorrect (rejected) completion, and the
    reference model's log-probability of each."""

    fact_id: str
    prompt_ids: tuple[int, ...]
    chosen_ids: tuple[int, ...]
    rejected_ids: tuple[int, ...]
    ref_chosen: float = 0.0
    ref_rejected: float = 0.0


def sequence_logprobs(model: torch.nn.Module, prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]],
                      pad_id: int) -> torch.Tensor:
    """log p(completion | prompt) per row: the sum of its teacher-forced token log-probs (with gradients)."""
    logp, mask, _ = completion_logprobs(model, prompts, completions, pad_id)
    return (logp * mask).sum(dim=1)


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean sigmoid DPO loss over the pairs, and each pair's reward margin
    beta * ((pi_c - ref_c) - (pi_r - ref_r)) (no grad)."""
    margin = beta * ((policy_chosen - ref_chosen) - (policy_rejected - ref_rejected))
    return -F.logsigmoid(margin).mean(), margin.detach()


def make_pairs(model: torch.nn.Module, tokenizer: Any, facts: pd.DataFrame, prompt: PromptConfig,
               config: DPOConfig, matcher: Matcher) -> tuple[list[Pair], pd.DataFrame]:
    """Sample, judge and pair (module docstring); returns the pairs with their reference log-probs and a
    table per question (fact_id, n_samples, n_correct, n_pairs)."""
    prompts, judged = sample_judged(model, tokenizer, facts, prompt, config, matcher, stream="dpo")
    pairs: list[Pair] = []
    rows = []
    for fid, p, samples in zip(facts["fact_id"], prompts, judged):
        good = list(dict.fromkeys(s.ids for s in samples if s.correct and s.finished))
        bad = list(dict.fromkeys(s.ids for s in samples if not s.correct and s.ids))
        n = min(len(good), len(bad), config.pairs_per_question)
        pairs += [Pair(str(fid), tuple(p), good[i], bad[i]) for i in range(n)]
        rows.append({"fact_id": str(fid), "n_samples": len(samples), "n_correct": sum(s.correct for s in samples),
                     "n_pairs": n})
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    scored: list[Pair] = []
    with torch.no_grad():
        for start in range(0, len(pairs), config.batch_size):
            chunk = pairs[start: start + config.batch_size]
            lp = sequence_logprobs(model, [q.prompt_ids for q in chunk] * 2,
                                   [q.chosen_ids for q in chunk] + [q.rejected_ids for q in chunk], pad_id)
            k = len(chunk)
            scored += [Pair(q.fact_id, q.prompt_ids, q.chosen_ids, q.rejected_ids, float(lp[i]), float(lp[k + i]))
                       for i, q in enumerate(chunk)]
    return scored, pd.DataFrame(rows)


def pairs_frame(pairs: Sequence[Pair], tokenizer: Any) -> pd.DataFrame:
    """The pairs as a table (ids as lists, the completions decoded for reading)."""
    return pd.DataFrame([{
        "fact_id": q.fact_id, "prompt_ids": list(q.prompt_ids), "chosen_ids": list(q.chosen_ids),
        "rejected_ids": list(q.rejected_ids), "chosen": tokenizer.decode(list(q.chosen_ids), skip_special_tokens=True),
        "rejected": tokenizer.decode(list(q.rejected_ids), skip_special_tokens=True),
        "ref_chosen": q.ref_chosen, "ref_rejected": q.ref_rejected} for q in pairs],
        columns=["fact_id", "prompt_ids", "chosen_ids", "rejected_ids", "chosen", "rejected", "ref_chosen",
                 "ref_rejected"])


def read_pairs(path: Path) -> list[Pair]:
    """The pairs of a ``dpo_pairs.parquet`` (a resumed run's)."""
    t = pd.read_parquet(path)
    return [Pair(str(r.fact_id), tuple(int(x) for x in r.prompt_ids), tuple(int(x) for x in r.chosen_ids),
                 tuple(int(x) for x in r.rejected_ids), float(r.ref_chosen), float(r.ref_rejected))
            for r in t.itertuples()]


def train_dpo(model: torch.nn.Module, tokenizer: Any, train_facts: pd.DataFrame, out_dir: str | Path,
              config: DPOConfig | None = None, eval_facts: pd.DataFrame | None = None,
              prompt: PromptConfig | None = None, matcher: Matcher | None = None, progress: bool = False,
              resume: bool = False) -> TrainResult:
    """Pair the model's own samples by ``matcher`` (default: the config's match mode), then DPO on the pairs.

    With no pair at all, nothing is trained and ``final/`` is the unchanged model.
    """
    config = config or DPOConfig()
    prompt = prompt or PromptConfig()
    train = check_facts(train_facts, "train_facts")
    evals = check_facts(eval_facts, "eval_facts") if eval_facts is not None else None
    matcher = matcher or config.match_config(prompt.terminator).matcher()
    eval_matcher = config.match_config(prompt.terminator).matcher()
    out = init_run_dir(out_dir, {"trainer": "dpo", "dpo": config.to_dict(), "prompt": prompt.to_dict()},
                       seed=config.seed, device=str(next(model.parameters()).device))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    with torch_threads(config.threads):
        model.eval()
        if resume and (out / PAIRS_FILE).exists() and (out / "dpo_questions.parquet").exists():
            pairs, table = read_pairs(out / PAIRS_FILE), pd.read_parquet(out / "dpo_questions.parquet")
        else:
            pairs, table = make_pairs(model, tokenizer, train, prompt, config, matcher)
            write_parquet(out / PAIRS_FILE, pairs_frame(pairs, tokenizer))
            write_parquet(out / "dpo_questions.parquet", table)
        logger.info("DPO: %d pairs from %d questions (%d had a correct sample)", len(pairs), len(table),
                    int((table["n_correct"] > 0).sum()))
        if not pairs:
            logger.warning("DPO: no (correct, incorrect) pair to train on; the final model is the input model")
        steps = config.sft_config().total_steps(len(pairs)) if pairs else 0
        if config.lora_r > 0:
            model = apply_lora(model, config.lora_r, config.lora_alpha)
        optimizer = make_optimizer(model, config.lr, config.weight_decay)
        params = [p for p in model.parameters() if p.requires_grad]

        def step_fn(s: int) -> dict[str, Any]:
            t0 = time.perf_counter()
            batch = [pairs[i] for i in batch_indices(len(pairs), config.batch_size, config.seed, s)]
            optimizer.zero_grad(set_to_none=True)
            lp = sequence_logprobs(model, [q.prompt_ids for q in batch] * 2,
                                   [q.chosen_ids for q in batch] + [q.rejected_ids for q in batch], pad_id)
            k = len(batch)
            loss, margin = dpo_loss(lp[:k], lp[k:], torch.tensor([q.ref_chosen for q in batch]),
                                    torch.tensor([q.ref_rejected for q in batch]), config.beta)
            loss.backward()
            norm = float(torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm))
            optimizer.step()
            return {"step": s + 1, "loss": float(loss.detach()), "margin_mean": float(margin.mean()),
                    "pair_accuracy": float((margin > 0).float().mean()), "grad_norm": norm,
                    "seconds": time.perf_counter() - t0}

        def eval_fn() -> float:
            return greedy_accuracy(model, tokenizer, evals, prompt, eval_matcher, config.max_new_tokens)

        loop = training_loop(model=model, tokenizer=tokenizer, optimizer=optimizer, out=out, steps=steps,
                             step_fn=step_fn, eval_fn=eval_fn if evals is not None else None,
                             save_every=config.save_every, eval_every=config.eval_every, resume=resume,
                             progress=progress, label="dpo", show="loss")
        final, model = save_final(model, tokenizer, out)
    frame, tail = loss_run_summary(out)
    accuracy = frame["pair_accuracy"].dropna() if "pair_accuracy" in frame else pd.Series(dtype=float)
    write_json(out / "summary.json", {
        "trainer": "dpo", "steps": steps, "pairs": len(pairs), "questions": len(table),
        "questions_with_correct": int((table["n_correct"] > 0).sum()),
        "questions_with_pair": int((table["n_pairs"] > 0).sum()), "resumed_from": loop.start or None,
        **tail, "pair_accuracy_last": float(accuracy.iloc[-1]) if len(accuracy) else None,
        "final": str(final), "lora": config.lora_r > 0, "beta": config.beta,
    })
    return TrainResult(log=frame, final_path=final, out_dir=out, model=model)
