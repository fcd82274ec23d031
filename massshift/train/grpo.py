"""A small GRPO trainer for zero-shot, one-hop, closed-book QA with a binary correctness reward.

Each step draws ``batch_size`` questions, samples ``num_generations`` (G)
completions per question with ``massshift.lm.sampling`` (one prompt pass per
question, seeded by (seed, step, fact_id)), rewards each completion 1/0 with
``matching.is_correct`` (or a user ``reward_fn``), turns rewards into group
advantages and takes ``num_iterations`` clipped policy-gradient steps.

Departures from GRPO as published (DeepSeekMath, arXiv 2402.03300) and from
the RL setup of arXiv 2605.07153, which massshift reproduces:

1. Loss aggregation is token-level (DAPO): the sum over every completion token
   of the batch divided by the number of those tokens, not the per-sequence
   1/|o_i| mean of the paper.
2. KL is optional: ``beta`` defaults to 0 and then no reference model is kept
   (TRL's default since v0.19, Dr. GRPO, DAPO). With ``beta > 0`` the penalty
   is the paper's k3 estimator against the frozen initial policy (with LoRA:
   the base model with the adapter switched off).
3. Advantages are (r - mean) / (std + 1e-4) with the unbiased in-group std, or
   r - mean with ``scale_rewards="none"`` (Dr. GRPO, arXiv 2503.20783).
4. One rollout batch is one optimizer step per pass; ``num_iterations`` passes
   reuse it (the paper's mu). Micro-batches only accumulate gradients, so the
   numbers do not depend on ``micro_batch_size``.
5. Old log-probs come from teacher forcing the sampled ids, not from the
   sampler (the same model and temperature, so the first pass's ratio is 1 up
   to round-off). With ``num_iterations == 1`` they are the detached current
   log-probs, which is the same number. With ``temperature != 1`` every
   log-prob (ratio, KL, entropy) uses logits / temperature: the distribution
   the completions were sampled from, not the untempered policy.
6. Constant learning rate without warmup, AdamW, gradient clipping at
   ``max_grad_norm``, dropout off (the model stays in eval mode).
7. The completion includes the stop token (the terminator or EOS), so
   stopping is learned; a truncated completion is rewarded on its text, or 0
   under ``truncated_reward="zero"`` (a warning when most were truncated).
   No format reward, no chain of thought.
8. Each prompt's greedy answer comes free with the samples (generation's row
   0); it is logged as ``greedy_reward`` and never trained on.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from massshift.configio import help_field
from massshift.data.matching import Matcher, contains_reward, relation_values
from massshift.lm.prompts import PromptConfig, stop_texts
from massshift.lm.runtime import torch_threads
from massshift.lm.sampling import GenerationConfig, generate, stop_token_mask
from massshift.rundir import init_run_dir, write_json
from massshift.seeds import derive_seed
from massshift.train.common import (
    TrainLog,
    TrainResult,
    apply_lora,
    batch_indices,
    check_facts,
    completion_logprobs,
    greedy_accuracy,
    log_summary,
    make_optimizer,
    prompt_ids_for,
    save_final,
    save_training_figure,
    training_loop,
    truncation_warning,
)
from massshift.train.config import Check, TrainConfig

logger = logging.getLogger(__name__)

RewardFn = Callable[[str, list[str]], float]


@dataclass(frozen=True)
class GRPOConfig(TrainConfig):
    """Settings of a GRPO run: the shared ``TrainConfig`` fields plus the rollout and the objective."""

    steps: int = help_field(200, help="Rollouts to train on (each is num_iterations optimizer steps).")
    batch_size: int = help_field(8, help="Questions per step (each gets num_generations completions).")
    num_generations: int = help_field(8, help="Completions sampled per question (the group size G, at least 2).")
    beta: float = help_field(0.0, help="Weight of the k3 KL penalty to the initial policy (0: no reference model).")
    epsilon: float = help_field(0.2, help="Clipping range of the importance ratio.")
    num_iterations: int = help_field(1, help="Optimizer passes over each rollout batch (the paper's mu).")
    scale_rewards: str = help_field("group", help=(
        "'group': advantages divided by the in-group reward std; 'none': not divided (Dr. GRPO)."))
    temperature: float = help_field(1.0, help="Sampling temperature; every log-prob uses logits / temperature.")
    micro_batch_size: int = help_field(0, help=(
        "Completions per forward/backward pass (0: the whole batch at once); never changes the numbers."))
    truncated_reward: str = help_field("text", help=(
        "'text': a completion cut at max_new_tokens is rewarded on its text; 'zero': it earns 0."))
    save_every: int = TrainConfig.default_for("save_every", 50)
    eval_every: int = TrainConfig.default_for("eval_every", 25)

    def checks(self) -> Iterable[Check]:
        yield self.steps >= 1, f"steps must be >= 1, got {self.steps}"
        yield (self.truncated_reward in ("text", "zero"),
               f"truncated_reward must be 'text' or 'zero', got {self.truncated_reward!r}")
        yield self.num_generations >= 2, (
            f"num_generations must be >= 2: a group of one has no advantage (GRPO compares completions "
            f"of the same question); got {self.num_generations}, try 8")
        yield self.beta >= 0, f"beta must be >= 0 (0 turns the KL penalty off), got {self.beta}"
        yield 0 < self.epsilon < 1, f"epsilon must be in (0, 1), got {self.epsilon}; the usual value is 0.2"
        yield self.num_iterations >= 1, f"num_iterations must be >= 1, got {self.num_iterations}"
        yield (self.scale_rewards in ("group", "none"),
               f"scale_rewards must be 'group' or 'none' (Dr. GRPO), got {self.scale_rewards!r}")
        yield self.temperature > 0, (
            f"temperature must be > 0 (at 0 every sample is the greedy answer and no group has reward "
            f"variance), got {self.temperature}; use 1.0")
        yield (self.micro_batch_size >= 0,
               f"micro_batch_size must be >= 0 (0: whole batch), got {self.micro_batch_size}")
        yield from super().checks()


@dataclass
class Rollout:
    """One step's sampled completions, question-major (rows q*G .. q*G+G-1 belong to question q)."""

    fact_ids: list[str]
    answers: list[list[str]]
    prompt_ids: list[list[int]]  # one per question
    completion_ids: list[list[int]]  # one per completion, stop token included
    texts: list[str]  # extracted answers, one per completion
    greedy_texts: list[str]  # one per question
    finished: list[bool]  # the completion ended with a stop token
    group_size: int


@dataclass
class LossParts:
    """A (micro-)batch's loss and the sums its diagnostics are made of."""

    loss: torch.Tensor  # scalar, already divided by the whole batch's token count
    clipped: float  # tokens where the clipped branch of the objective was taken
    kl_ref: float  # sum of k3(ref || policy) over tokens
    kl_old: float  # sum of k3(old || policy) over tokens


def rollout(model: torch.nn.Module, tokenizer: Any, prompt_ids: Sequence[list[int]], fact_ids: Sequence[str],
            answers: Sequence[list[str]], config: GRPOConfig, step: int, terminator: str = "\n",
            stops: Sequence[str] = ()) -> Rollout:
    """Sample G completions per prompt (plus the greedy answer) with ``massshift.lm.sampling``."""
    g = config.num_generations
    gen_cfg = GenerationConfig(n_samples=g, temperature=config.temperature, max_new_tokens=config.max_new_tokens,
                               seed=derive_seed(config.seed, "rollout", step), max_rows=len(prompt_ids) * (g + 1))
    gens = generate(model, prompt_ids, fact_ids, tokenizer, gen_cfg, terminator, stops=stops)
    stop = stop_token_mask(tokenizer, terminator, stops=stops)
    completion_ids = [ids for gen in gens for ids in gen.sample_ids]
    return Rollout(
        fact_ids=list(fact_ids), answers=[list(a) for a in answers], prompt_ids=[list(p) for p in prompt_ids],
        completion_ids=completion_ids, texts=[t for gen in gens for t in gen.samples],
        greedy_texts=[gen.greedy for gen in gens],
        finished=[ids[-1] < len(stop) and bool(stop[ids[-1]]) for ids in completion_ids],
        group_size=g,
    )


def rewards(ro: Rollout, matcher: Matcher | None = None, reward_fn: RewardFn | None = None,
            truncated_reward: str = "text") -> torch.Tensor:
    """Reward of every completion, shape (questions, G): ``reward_fn(text, answers)`` or matcher's 1/0;
    under ``truncated_reward="zero"`` a completion that did not finish (``ro.finished``) gets 0."""
    if (matcher is None) == (reward_fn is None):
        raise ValueError("pass exactly one of matcher or reward_fn")
    fn: Callable[[str, list[str]], float] = reward_fn or (lambda t, a: float(matcher(t, a)))  # type: ignore[misc]
    g = ro.group_size
    vals = [float(fn(t, ro.answers[i // g])) for i, t in enumerate(ro.texts)]
    if truncated_reward == "zero":
        vals = [v if done else 0.0 for v, done in zip(vals, ro.finished)]
    elif truncated_reward != "text":
        raise ValueError(f"truncated_reward must be 'text' or 'zero', got {truncated_reward!r}")
    return torch.tensor(vals, dtype=torch.float32).view(-1, g)


def group_advantages(rewards: torch.Tensor, scale_rewards: str = "group", eps: float = 1e-4) -> torch.Tensor:
    """(r - group mean) / (group std + eps), or r - group mean with ``scale_rewards='none'``.

    ``rewards`` is (questions, G); the std is the unbiased in-group std. A group whose rewards are all
    equal gets exact zeros (the float mean of equal values need not equal them, and dividing that
    round-off by std + eps would turn it into a spurious advantage).
    """
    centred = rewards - rewards.mean(dim=1, keepdim=True)
    centred = centred.masked_fill((rewards == rewards[:, :1]).all(dim=1, keepdim=True), 0.0)
    if scale_rewards == "none":
        return centred
    if scale_rewards != "group":
        raise ValueError(f"scale_rewards must be 'group' or 'none', got {scale_rewards!r}")
    return centred / (rewards.std(dim=1, keepdim=True) + eps)


def policy_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                epsilon: float, n_tokens: int | float, beta: float = 0.0,
                ref_logp: torch.Tensor | None = None) -> LossParts:
    """Clipped surrogate (+ beta * k3 KL), summed over masked tokens and divided by ``n_tokens``.

    Shapes: ``logp``, ``old_logp``, ``mask``, ``ref_logp`` (rows, C); ``advantages`` (rows,).
    """
    adv = advantages[:, None]
    ratio = torch.exp(logp - old_logp)
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1 - epsilon, 1 + epsilon) * adv
    per_token = -torch.minimum(unclipped, clipped)
    kl_ref = torch.zeros((), device=logp.device)
    if beta > 0:
        if ref_logp is None:
            raise ValueError("beta > 0 needs ref_logp")
        d = ref_logp - logp
        k3 = torch.exp(d) - d - 1
        per_token = per_token + beta * k3
        kl_ref = (k3.detach() * mask).sum()
    loss = (per_token * mask).sum() / n_tokens
    with torch.no_grad():
        was_clipped = ((clipped < unclipped) & (mask > 0)).float().sum()
        d_old = old_logp - logp
        kl_old = ((torch.exp(d_old) - d_old - 1) * mask).sum()
    return LossParts(loss, float(was_clipped), float(kl_ref), float(kl_old))


def build_reward(train: pd.DataFrame, config: GRPOConfig, terminator: str = "\n",
                 reward_fn: RewardFn | None = None) -> RewardFn:
    """The reward both engines optimise: ``reward_fn`` when given, else the matcher's 1/0.

    Under ``match_mode="contains"``, when every training fact carries a relation, an answer that also
    names another value of its relation earns nothing (anti-hedging, ``matching.contains_reward``).
    """
    if reward_fn is not None:
        return reward_fn
    if config.match_mode == "contains" and "relation" in train.columns and train["relation"].notna().all():
        logger.info("reward: contains, and wrong when the answer also names another value of the relation")
        return contains_reward(relation_values(train), config.max_words)
    matcher = config.match_config(terminator).matcher()

    def correct(text: str, answers: list[str]) -> float:
        return float(matcher(text, answers))

    return correct


def _reference_logprobs(model: torch.nn.Module, ref_model: torch.nn.Module | None,
                        logps: Callable[..., tuple[torch.Tensor, ...]], chunks: list[slice]) -> list[torch.Tensor]:
    """Log-probs (rows, C) of each chunk under the frozen initial policy (with LoRA: adapter off)."""
    with torch.no_grad():
        if ref_model is not None:
            return [logps(ref_model, sl)[0] for sl in chunks]
        with model.disable_adapter():  # type: ignore[operator]
            return [logps(model, sl)[0] for sl in chunks]


def step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, tokenizer: Any, facts: pd.DataFrame,
         prompt_ids: Sequence[list[int]], config: GRPOConfig, step_index: int, matcher: Matcher | None = None,
         reward_fn: RewardFn | None = None, ref_model: torch.nn.Module | None = None,
         terminator: str = "\n", stops: Sequence[str] = ()) -> dict[str, Any]:
    """One GRPO step on ``facts`` (the batch's rows); returns the step's diagnostics. ``stops`` end a
    completion like the terminator (``prompts.stop_texts``)."""
    t0 = time.perf_counter()
    model.eval()  # no dropout: the trained log-probs are the sampled ones
    ro = rollout(model, tokenizer, prompt_ids, list(facts["fact_id"]), list(facts["answers"]), config,
                 step_index, terminator, stops)
    r = rewards(ro, matcher, reward_fn, config.truncated_reward)  # (B, G)
    adv = group_advantages(r, config.scale_rewards).reshape(-1)
    g = config.num_generations
    rows_prompt = [ro.prompt_ids[i // g] for i in range(len(ro.completion_ids))]
    n_tokens = sum(len(c) for c in ro.completion_ids)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    mb = config.micro_batch_size or len(rows_prompt)
    chunks = [slice(s, s + mb) for s in range(0, len(rows_prompt), mb)]

    def logps(m: torch.nn.Module, sl: slice, entropy: bool = False) -> tuple[torch.Tensor, ...]:
        return completion_logprobs(m, rows_prompt[sl], ro.completion_ids[sl], pad_id, config.temperature,
                                   entropy)  # type: ignore[return-value]

    ref = _reference_logprobs(model, ref_model, logps, chunks) if config.beta > 0 else []
    with torch.no_grad():
        old = [logps(model, sl)[0] for sl in chunks] if config.num_iterations > 1 else []
    sums = _optimise(model, optimizer, config, logps, chunks, adv.to(next(model.parameters()).device), old, ref,
                     n_tokens)
    fn = reward_fn or (lambda t, a: float(matcher(t, a)))  # type: ignore[misc]
    greedy = [float(fn(t, a)) for t, a in zip(ro.greedy_texts, ro.answers)]
    passes_after_first = config.num_iterations - 1
    zero_var = (r.std(dim=1) == 0).tolist()
    return {
        "step": step_index + 1,
        "reward_mean": float(r.mean()), "reward_std": float(r.std()),
        "zero_var_share": float((r.std(dim=1) == 0).float().mean()),
        # which questions gave no signal (attribution.py splits the share by accessibility bucket)
        "zero_var_fact_ids": [f for f, z in zip(ro.fact_ids, zero_var) if z],
        "zero_var_rewards": [float(v) for v, z in zip(r[:, 0].tolist(), zero_var) if z],
        "greedy_reward": sum(greedy) / len(greedy),
        "kl": sums["kl_ref"] / n_tokens if config.beta > 0 else None,
        "kl_old": sums["kl_old"] / (n_tokens * passes_after_first) if passes_after_first else None,
        "entropy": sums["entropy"] / n_tokens,
        "completion_len": n_tokens / len(ro.completion_ids),
        "truncated_share": 1.0 - sum(ro.finished) / len(ro.finished),
        "clipped_share": sums["clipped"] / (n_tokens * config.num_iterations),
        "loss": sums["loss"], "grad_norm": sums["grad_norm"],
        "seconds": time.perf_counter() - t0,
    }


def _optimise(model: torch.nn.Module, optimizer: torch.optim.Optimizer, config: GRPOConfig,
              logps: Callable[..., tuple[torch.Tensor, ...]], chunks: list[slice], adv: torch.Tensor,
              old: list[torch.Tensor], ref: list[torch.Tensor], n_tokens: int) -> dict[str, float]:
    """``num_iterations`` optimizer steps on one rollout batch, gradients accumulated over ``chunks``.

    Returns the mean loss and gradient norm over the passes and the sums the diagnostics divide
    (clipped tokens, k3 KL to the reference and to the old policy, entropy).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    losses, norms, clipped, kl_ref, kl_old, ent_sum = [], [], 0.0, 0.0, 0.0, 0.0
    for it in range(config.num_iterations):
        optimizer.zero_grad(set_to_none=True)
        loss_sum = 0.0
        for k, sl in enumerate(chunks):
            logp, mask, ent = logps(model, sl, entropy=it == 0)
            parts = policy_loss(logp, old[k] if old else logp.detach(), adv[sl], mask, config.epsilon, n_tokens,
                                config.beta, ref[k] if ref else None)
            parts.loss.backward()
            loss_sum += float(parts.loss.detach())
            clipped += parts.clipped
            if it == 0:
                kl_ref += parts.kl_ref
                ent_sum += float(ent.sum()) if ent is not None else 0.0
            else:
                kl_old += parts.kl_old
        norms.append(float(torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)))
        optimizer.step()
        losses.append(loss_sum)
    return {"loss": sum(losses) / len(losses), "grad_norm": sum(norms) / len(norms), "clipped": clipped,
            "kl_ref": kl_ref, "kl_old": kl_old, "entropy": ent_sum}


GRPOResult = TrainResult


def train_grpo(model: torch.nn.Module, tokenizer: Any, train_facts: pd.DataFrame, out_dir: str | Path,
               config: GRPOConfig | None = None, eval_facts: pd.DataFrame | None = None,
               prompt: PromptConfig | None = None, reward_fn: RewardFn | None = None, progress: bool = False,
               resume: bool = False) -> TrainResult:
    """Train ``model`` with GRPO on ``train_facts``; writes the run directory ``out_dir``.

    ``out_dir`` receives config.yaml, env.json, train_log.jsonl, checkpoints/step-N, final/,
    figures/training.png and summary.json. With ``resume`` the run continues from the last
    checkpoint (weights, optimizer, RNG) and ends with the parameters an uninterrupted run has;
    pass the same initial model as the interrupted run (it is the reference model with ``beta > 0``
    and the base under the LoRA adapter).
    With LoRA, ``model`` is wrapped in place and ``final/`` holds the merged model (adapter in
    ``final/adapter``). ``reward_fn(prediction, answers) -> float`` replaces the binary reward;
    eval accuracy always uses the matcher.
    """
    config = config or GRPOConfig()
    prompt = prompt or PromptConfig()
    train = check_facts(train_facts, "train_facts")
    evals = check_facts(eval_facts, "eval_facts") if eval_facts is not None else None
    out = init_run_dir(out_dir, {"trainer": "grpo", "grpo": config.to_dict(), "prompt": prompt.to_dict(),
                                 "custom_reward": reward_fn is not None}, seed=config.seed,
                       device=str(next(model.parameters()).device))
    matcher = config.match_config(prompt.terminator).matcher()  # eval accuracy always uses the matcher
    reward = build_reward(train, config, prompt.terminator, reward_fn)
    with torch_threads(config.threads):
        model.eval()
        ref_model = None
        if config.lora_r > 0:
            model = apply_lora(model, config.lora_r, config.lora_alpha)
        elif config.beta > 0:
            ref_model = copy.deepcopy(model).requires_grad_(False)
        optimizer = make_optimizer(model, config.lr, config.weight_decay)
        prompts = prompt_ids_for(tokenizer, list(train["question"]), prompt)

        def step_fn(s: int) -> dict[str, Any]:
            idx = batch_indices(len(train), config.batch_size, config.seed, s)
            return step(model, optimizer, tokenizer, train.iloc[idx], [prompts[i] for i in idx], config, s,
                        reward_fn=reward, ref_model=ref_model,
                        terminator=prompt.terminator, stops=stop_texts(prompt, tokenizer))

        def eval_fn() -> float:
            return greedy_accuracy(model, tokenizer, evals, prompt, matcher, config.max_new_tokens)

        loop = training_loop(model=model, tokenizer=tokenizer, optimizer=optimizer, out=out, steps=config.steps,
                             step_fn=step_fn, eval_fn=eval_fn if evals is not None else None,
                             save_every=config.save_every, eval_every=config.eval_every, resume=resume,
                             progress=progress, label="grpo", show="reward_mean")
        final, model = save_final(model, tokenizer, out)
    frame = TrainLog(out).frame()
    save_training_figure(frame, out)
    truncated = truncation_warning(frame, config)
    if truncated:
        logger.warning(truncated)
    write_json(out / "summary.json", {
        "trainer": "grpo", "truncation_warning": truncated, "steps": config.steps, "resumed_from": loop.start or None,
        "steps_per_second": (config.steps - loop.start) / loop.seconds if loop.seconds > 0 else None,
        **log_summary(frame), "final": str(final), "lora": config.lora_r > 0,
    })
    return TrainResult(log=frame, final_path=final, out_dir=out, model=model)
