"""Cheap per-example attribution: a TracIn-style score of every training fact for the GRPO gain.

The score of training fact i at a checkpoint theta is

    score_i = < grad_theta J_i , grad_theta sum_{t in test} log p(gold_t) >

where ``J_i`` is the GRPO objective on fact i's own sampled group: G completions
sampled from theta (``grpo.rollout``), rewarded 1/0 (``grpo.rewards``), turned into
group advantages (``grpo.group_advantages``), and the clipped surrogate of
``grpo.policy_loss`` at ratio 1, normalised by the group's completion tokens. To
first order, one SGD step of size lr on fact i alone changes the held-out sum of
log p(gold) by ``lr * score_i`` (TracIn, Pruthi et al. 2020, with one checkpoint
or a sum over checkpoints). A group whose completions all get the same reward has
zero advantage, hence a zero gradient and a score of exactly 0: such facts are
counted (``zero_signal``) and their backward pass is skipped.

Two numbers per fact: ``score`` (the exact inner product: one held-out gradient is
kept in memory, and each training gradient is dotted with it and dropped) and
``score_proj`` (the same inner product after a seeded count-sketch projection of
both gradients to ``dim`` coordinates). The projected training gradients
(facts x dim) are kept, so a new held-out set can be scored later without
recomputing them, in memory that does not grow with the model. The count sketch
(Charikar et al. 2002; sparse JL) sends every parameter coordinate to one of
``dim`` bins with a random sign; the sign and bin of a coordinate are drawn from a
generator seeded by (seed, parameter name), so the projection is a pure function
of the seed and the parameter names, and its inner products are unbiased.

Parameters: ``all`` trainable ones, ``last:N`` (the last N decoder layers plus
every parameter outside the layers except the input embedding: final norm and
output head) for large models, or with a PEFT model its trainable LoRA weights.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from massshift.configio import help_field
from massshift.lm.prompts import PromptConfig, encode_facts
from massshift.seeds import derive_seed
from massshift.train.common import check_facts, completion_logprobs, prompt_ids_for
from massshift.train.grpo import GRPOConfig, RewardFn, group_advantages, policy_loss, rewards, rollout

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TracInConfig:
    """Settings of the per-example scores."""

    dim: int = help_field(4096, help="Count-sketch dimension of the projected gradients (0: no projection, "
                                     "exact scores only).")
    params: str = help_field("all", help=(
        "Parameters scored: all, last:N (last N decoder layers, final norm, output head) or trainable."))
    seed: int = help_field(0, help="Seeds the projection and the sampled groups.")
    max_test: int = help_field(0, help="Held-out facts in the held-out gradient (0: all).")
    chunk: int = help_field(32, help="Facts per rollout batch (does not change the numbers).")

    def __post_init__(self) -> None:
        if self.dim < 0:
            raise ValueError(f"TracInConfig.dim must be >= 0 (0: no projection), got {self.dim}")
        if not (self.params in ("all", "trainable") or re.fullmatch(r"last:\d+", self.params)):
            raise ValueError(f"TracInConfig.params must be 'all', 'trainable' or 'last:N' (e.g. last:2), "
                             f"got {self.params!r}")
        if self.max_test < 0:
            raise ValueError(f"TracInConfig.max_test must be >= 0 (0: all held-out facts), got {self.max_test}")
        if self.chunk < 1:
            raise ValueError(f"TracInConfig.chunk must be >= 1, got {self.chunk}")


def select_params(model: torch.nn.Module, spec: str = "all") -> list[tuple[str, torch.nn.Parameter]]:
    """The (name, parameter) pairs the scores use, in ``named_parameters`` order."""
    named = list(model.named_parameters())
    if spec == "trainable" or (spec == "all" and any(not p.requires_grad for _, p in named)):
        chosen = [(n, p) for n, p in named if p.requires_grad]
    elif spec == "all":
        chosen = named
    else:
        keep = int(spec.split(":", 1)[1])
        layer = {n: int(m.group(1)) for n, _ in named if (m := re.search(r"\.layers?\.(\d+)\.", n))
                 or (m := re.search(r"\.h\.(\d+)\.", n))}
        if not layer:
            raise ValueError(f"params={spec!r}: no decoder layers found in the parameter names; use 'all'")
        top = max(layer.values())
        chosen = [(n, p) for n, p in named
                  if (n in layer and layer[n] > top - keep) or (n not in layer and "emb" not in n and "wte" not in n)]
    if not chosen:
        raise ValueError(f"params={spec!r} selects no parameter")
    return chosen


class CountSketch:
    """A seeded count-sketch projection of a flat gradient to ``dim`` coordinates.

    Coordinate j of parameter ``name`` goes to bin ``h(j)`` with sign ``s(j)``, both drawn from a
    ``torch.Generator`` seeded by ``(seed, name)``; ``project(g) = sum_j s(j) g_j e_{h(j)}``.
    """

    def __init__(self, named_shapes: Sequence[tuple[str, int]], dim: int, seed: int) -> None:
        if dim < 1:
            raise ValueError(f"CountSketch dim must be >= 1, got {dim}")
        self.dim = dim
        self.maps: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for name, numel in named_shapes:
            gen = torch.Generator().manual_seed(derive_seed(seed, "sketch", name))
            bins = torch.randint(0, dim, (numel,), generator=gen)
            signs = torch.randint(0, 2, (numel,), generator=gen, dtype=torch.int8) * 2 - 1
            self.maps[name] = (bins, signs)

    def project(self, grads: dict[str, torch.Tensor]) -> torch.Tensor:
        """The projected vector (dim,) of a gradient given per parameter name."""
        out = torch.zeros(self.dim, dtype=torch.float64)
        for name, g in grads.items():
            bins, signs = self.maps[name]
            out.index_add_(0, bins, g.detach().reshape(-1).double().cpu() * signs.double())
        return out


def _grads(params: Sequence[tuple[str, torch.nn.Parameter]]) -> dict[str, torch.Tensor]:
    return {n: (p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)) for n, p in params}


def _zero(params: Sequence[tuple[str, torch.nn.Parameter]]) -> None:
    for _, p in params:
        p.grad = None


def heldout_gradient(model: torch.nn.Module, tokenizer: Any, facts: pd.DataFrame, params: Sequence[tuple[str, Any]],
                     prompt: PromptConfig | None = None, batch: int = 64) -> dict[str, torch.Tensor]:
    """Gradient of sum over facts of log p(gold), p(gold) summed over aliases (teacher-forced, terminator included)."""
    prompt = prompt or PromptConfig()
    facts = check_facts(facts, "held-out facts")
    items = encode_facts(tokenizer, list(facts["question"]), [list(a) for a in facts["answers"]], prompt,
                         fact_ids=list(facts["fact_id"]))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    _zero(params)
    for start in range(0, len(items), batch):
        part = items[start: start + batch]
        rows_p = [p for p, conts in part for _ in conts]
        rows_c = [c for _, conts in part for c in conts]
        owner = torch.tensor([i for i, (_, conts) in enumerate(part) for _ in conts])
        logp, _, _ = completion_logprobs(model, rows_p, rows_c, pad_id)
        per_alias = logp.sum(dim=1)  # (rows,)
        total = torch.stack([torch.logsumexp(per_alias[owner == i], dim=0) for i in range(len(part))]).sum()
        total.backward()
    out = _grads(params)
    _zero(params)
    return out


def group_objective_gradient(model: torch.nn.Module, prompt_ids: list[int], completion_ids: Sequence[list[int]],
                             advantages: torch.Tensor, params: Sequence[tuple[str, Any]], pad_id: int,
                             config: GRPOConfig) -> dict[str, torch.Tensor]:
    """Gradient of one group's GRPO objective (minus ``grpo.policy_loss`` at ratio 1, over its own tokens)."""
    _zero(params)
    n_tokens = sum(len(c) for c in completion_ids)
    logp, mask, _ = completion_logprobs(model, [prompt_ids] * len(completion_ids), completion_ids, pad_id,
                                        config.temperature)
    parts = policy_loss(logp, logp.detach(), advantages, mask, config.epsilon, n_tokens)
    (-parts.loss).backward()
    out = _grads(params)
    _zero(params)
    return out


@dataclass
class TracInResult:
    """Per-fact scores (``fact_id, reward_mean, zero_signal, score, score_proj, grad_norm``), and the projections."""

    scores: pd.DataFrame
    train_proj: np.ndarray | None  # (facts, dim)
    test_proj: np.ndarray | None  # (dim,)
    test_grad_norm: float


def tracin_scores(model: torch.nn.Module, tokenizer: Any, train_facts: pd.DataFrame, test_facts: pd.DataFrame,
                  grpo: GRPOConfig, config: TracInConfig | None = None, prompt: PromptConfig | None = None,
                  reward_fn: RewardFn | None = None, on_facts: Callable[[float], None] | None = None) -> TracInResult:
    """Score every training fact against the held-out log p(gold) gradient at ``model`` (see module docstring).

    ``grpo`` supplies the group size, temperature, sampling length, clipping range and matcher
    (``reward_fn`` replaces the matcher, as in ``train_grpo``). Parameters' ``requires_grad`` flags
    are restored afterwards.
    """
    config = config or TracInConfig()
    prompt = prompt or PromptConfig()
    train = check_facts(train_facts, "train facts")
    test = check_facts(test_facts, "held-out facts")
    if config.max_test and len(test) > config.max_test:
        test = test.sample(n=config.max_test, random_state=config.seed).reset_index(drop=True)
    model.eval()
    params = select_params(model, config.params)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    chosen = {n for n, _ in params}
    for n, p in model.named_parameters():
        p.requires_grad_(n in chosen)
    try:
        g_test = heldout_gradient(model, tokenizer, test, params, prompt)
        sketch = CountSketch([(n, p.numel()) for n, p in params], config.dim, config.seed) if config.dim else None
        test_proj = sketch.project(g_test) if sketch else None
        test_norm = float(torch.sqrt(sum((g.double() ** 2).sum() for g in g_test.values())))
        matcher = None if reward_fn else grpo.match_config(prompt.terminator).matcher()
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        sampler = GRPOConfig.from_dict({**grpo.to_dict(), "seed": config.seed})
        prompts = prompt_ids_for(tokenizer, list(train["question"]), prompt)
        rows, proj = [], []
        g = grpo.num_generations
        for start in range(0, len(train), config.chunk):
            idx = list(range(start, min(start + config.chunk, len(train))))
            with torch.no_grad():
                ro = rollout(model, tokenizer, [prompts[i] for i in idx], [train["fact_id"][i] for i in idx],
                             [train["answers"][i] for i in idx], sampler, 0, prompt.terminator)
            r = rewards(ro, matcher, reward_fn)  # (facts, G)
            adv = group_advantages(r, grpo.scale_rewards)
            for k, i in enumerate(idx):
                zero = bool((adv[k] == 0).all())
                score, norm, vec = 0.0, 0.0, torch.zeros(config.dim, dtype=torch.float64) if sketch else None
                if not zero:
                    grad = group_objective_gradient(model, prompts[i], ro.completion_ids[k * g:(k + 1) * g],
                                                    adv[k], params, pad_id, grpo)
                    score = float(sum((grad[n].double() * g_test[n].double()).sum() for n in grad))
                    norm = float(torch.sqrt(sum((v.double() ** 2).sum() for v in grad.values())))
                    vec = sketch.project(grad) if sketch else None
                rows.append({"fact_id": train["fact_id"][i], "reward_mean": float(r[k].mean()), "zero_signal": zero,
                             "score": score, "score_proj": float(vec @ test_proj) if sketch else float("nan"),
                             "grad_norm": norm})
                if vec is not None:
                    proj.append(vec.float().numpy())
            if on_facts:
                on_facts(len(idx))
    finally:
        for n, p in model.named_parameters():
            p.requires_grad_(flags[n])
            p.grad = None
    return TracInResult(scores=pd.DataFrame(rows), train_proj=np.stack(proj) if proj else None,
                        test_proj=test_proj.float().numpy() if test_proj is not None else None,
                        test_grad_norm=test_norm)
