"""Teacher forcing: the log-probability of every alias of every fact's answer.

``logp_gold`` is log-sum-exp over aliases of log p(answer + terminator | prompt),
each alias summed over its continuation tokens (docs/criteria.md). The contract is
lm-evaluation-harness's (see ``prompts.encode_pair``).

``continuation_logprobs`` is the one kernel: scoring calls it under
``inference_mode`` and the trainers (``massshift.train``) with gradients. Per
batch (scoring sorts facts by their packed length so padding stays small), one
forward pass over rows of packed prompts (``pack_rows``): each prompt, then every
continuation that follows it (all aliases and distractors of a fact, or all
completions of a GRPO group), each but its last token, and short prompts share
a row. An attention mask keeps each continuation to its prompt and itself, and
its position ids go on from the end of the prompt, so each token sees exactly
what it would in a plain forward pass of prompt + continuation. Only the positions that score a token reach the
output layer (``logits_to_keep``): the prompt's last, and the continuations'.
So a prompt is encoded once for all its rows, no row is padded to its batch's
longest alias, and no KV cache is copied per row.

Padding never reaches the numbers: masked keys get zero attention weight and
position ids count real tokens only, so scores agree across batch sizes and
padding sides to float32 round-off (tested). ``run_prompts`` (one pass over
prompts, KV cache kept) serves generation.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from massshift.configio import ConfigIO, help_field
from massshift.lm.packing import pack_rows

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScoringConfig(ConfigIO):
    """Batching of teacher forcing (it never changes the numbers)."""

    batch_size: int = help_field(128, help=(
        "Continuation rows (aliases and distractors) per forward pass; facts are packed until their rows "
        "fill it, and a fact with more rows still runs alone. Never changes the numbers."))
    padding_side: str = help_field("left", help=(
        "'left' or 'right' padding of the packed rows (prompt and continuations); the numbers do not depend on it."))

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 (the default is 128), got {self.batch_size}")
        if self.padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {self.padding_side!r}")


@dataclass
class AliasScores:
    """Teacher-forced scores of one fact.

    Attributes:
        alias_logps: summed log-prob of each alias's continuation.
        token_logps: per-token log-probs of each alias's continuation.
        alias_is_greedy: whether every continuation token of the alias is the argmax.
    """

    alias_logps: list[float]
    token_logps: list[list[float]]
    alias_is_greedy: list[bool]

    @property
    def logp_gold(self) -> float:
        """Log-sum-exp over aliases; -inf when every alias has probability 0."""
        vals = [v for v in self.alias_logps if not math.isnan(v)]
        if not vals:
            return math.nan
        m = max(vals)
        if m == -math.inf:
            return -math.inf
        return m + math.log(sum(math.exp(v - m) for v in vals))

    @property
    def best(self) -> int:
        """Index of the alias with the highest log-prob (NaN sorts last)."""
        return max(range(len(self.alias_logps)),
                   key=lambda i: -math.inf if math.isnan(self.alias_logps[i]) else self.alias_logps[i])

    @property
    def logp_per_token(self) -> float:
        """Length-normalised log-prob of the best alias."""
        b = self.best
        return self.alias_logps[b] / len(self.token_logps[b])

    @property
    def is_greedy(self) -> bool:
        """Whether some alias is produced token by token by the argmax."""
        return any(self.alias_is_greedy)


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _cache_kwarg(model: torch.nn.Module) -> str:
    """The forward keyword for a KV cache: ``cache`` from transformers 5.24, ``past_key_values`` before."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT wraps the model
    return "cache" if "cache" in inspect.signature(inner.forward).parameters else "past_key_values"


def forward_cached(model: torch.nn.Module, cache: object | None, **kwargs: object) -> tuple[torch.Tensor, object]:
    """Run ``model`` with a KV cache (None: start one); returns (logits, cache)."""
    if cache is not None:
        kwargs[_cache_kwarg(model)] = cache
    out = model(use_cache=True, **kwargs)
    new_cache = getattr(out, "cache", None)  # transformers >= 5.24 (reading past_key_values warns there)
    if new_cache is None:
        new_cache = getattr(out, "past_key_values", None)
    return out.logits, new_cache


def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int, side: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad token lists to one tensor; returns ids (batch, len) and attention mask (batch, len)."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if not s:
            continue
        if side == "left":
            ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
            mask[i, width - len(s):] = 1
        else:
            ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
            mask[i, : len(s)] = 1
    return ids, mask


def positions_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that count real tokens only (padding gets position 0)."""
    return (mask.cumsum(-1) - 1).clamp(min=0) * mask


def run_prompts(
    model: torch.nn.Module, prompts: Sequence[Sequence[int]], pad_id: int, side: str = "left",
    temperature: float = 1.0,
) -> tuple[torch.Tensor, object, torch.Tensor, torch.Tensor]:
    """One forward pass over a batch of prompts.

    Returns the next-token log-probs after each prompt (batch, vocab; of logits / ``temperature``),
    the KV cache, the prompt attention mask (batch, len) and each prompt's length (batch,).
    """
    device = _model_device(model)
    if any(len(p) == 0 for p in prompts):
        raise ValueError("a prompt has no tokens; the model needs at least one token to condition on")
    ids, mask = pad_batch(prompts, pad_id, side)
    ids, mask = ids.to(device), mask.to(device)
    keep = {"logits_to_keep": 1} if side == "left" else {}  # left padding: only the last position matters
    logits, cache = forward_cached(model, None, input_ids=ids, attention_mask=mask,
                                   position_ids=positions_from_mask(mask), **keep)
    lengths = mask.sum(-1)
    if side == "left":
        last = logits[:, -1, :]  # (batch, vocab)
    else:
        last = logits[torch.arange(len(prompts), device=device), lengths - 1, :]
    return _log_softmax(last, temperature), cache, mask, lengths


def _log_softmax(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Log-softmax in float32 of ``logits / temperature`` (any shape, vocab last)."""
    logits = logits.float()
    return torch.log_softmax(logits if temperature == 1.0 else logits / temperature, dim=-1)


def _entropy(logp: torch.Tensor) -> torch.Tensor:
    """Entropy of each distribution (vocab last), without gradient."""
    with torch.no_grad():
        return -(logp.exp() * logp).sum(-1)


@dataclass
class TokenLogprobs:
    """Teacher-forced numbers of continuation rows, one column per continuation token (C: the longest)."""

    logp: torch.Tensor  # (rows, C) log p(token | prompt, earlier tokens); 0 at padding
    mask: torch.Tensor  # (rows, C) float: 1 at real tokens, 0 at padding
    greedy: torch.Tensor  # (rows, C) bool: the token is the argmax of its position (True at padding)
    entropy: torch.Tensor | None  # (rows, C) entropy of each position's distribution (no grad); 0 at padding


def _takes_logits_to_keep(model: torch.nn.Module) -> bool:
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT wraps the model
    return "logits_to_keep" in inspect.signature(inner.forward).parameters


def continuation_logprobs(
    model: torch.nn.Module, prompt_ids: Sequence[Sequence[int]], continuation_ids: Sequence[Sequence[int]],
    pad_id: int, prompt_rows: Sequence[int] | None = None, side: str = "left", temperature: float = 1.0,
    with_entropy: bool = False,
) -> TokenLogprobs:
    """The one teacher-forcing kernel: per-token log-probs of each continuation given its prompt.

    ``prompt_ids`` holds P prompts and ``continuation_ids`` R continuations; continuation ``r``
    follows prompt ``prompt_rows[r]`` (default: prompt ``r``). Scoring (under ``inference_mode``) and
    the trainers (with gradients) both call it. One forward pass over rows of prompts, each followed
    by all its continuations (``pack_rows``), padded on ``side``: an attention mask keeps every
    continuation to its prompt and itself, position ids restart after the prompt for each, and only
    the scoring positions reach the output layer (``logits_to_keep``). So a prompt is encoded once for
    all its aliases (or all completions of a GRPO group), and no row is padded to the longest alias.
    Log-probs are of logits / ``temperature``. Every continuation needs at least one token (lm-eval
    issue 1053).
    """
    if any(len(c) == 0 for c in continuation_ids):
        raise ValueError("a continuation has no tokens; teacher forcing needs at least one token to score")
    if any(len(p) == 0 for p in prompt_ids):
        raise ValueError("a prompt has no tokens; the model needs at least one token to condition on")
    device = _model_device(model)
    rows = list(range(len(continuation_ids))) if prompt_rows is None else [int(r) for r in prompt_rows]
    packed = pack_rows(prompt_ids, continuation_ids, rows, pad_id, side)
    keep = packed.keep.to(device)
    dtype = next(model.parameters()).dtype
    if _takes_logits_to_keep(model):
        logits = model(input_ids=packed.ids.to(device), attention_mask=packed.attention_mask(dtype).to(device),
                       position_ids=packed.positions.to(device), logits_to_keep=keep, use_cache=False).logits
    else:
        logits = model(input_ids=packed.ids.to(device), attention_mask=packed.attention_mask(dtype).to(device),
                       position_ids=packed.positions.to(device), use_cache=False).logits[keep]
    logp = _log_softmax(logits, temperature)  # (K, vocab)
    source, target, real = packed.source.to(device), packed.target.to(device), packed.mask.to(device)
    tok_lp = logp[source, target]  # (R, C)
    return TokenLogprobs(
        logp=torch.where(real, tok_lp, torch.zeros_like(tok_lp)), mask=real.float(),
        greedy=(logp.argmax(-1)[source] == target) | ~real,
        entropy=_entropy(logp)[source] * real if with_entropy else None,
    )


def _batches(items: Sequence[tuple[list[int], list[list[int]]]], order: list[int], rows: int) -> list[list[int]]:
    batches: list[list[int]] = []
    cur: list[int] = []
    n_rows = 0
    for i in order:
        k = len(items[i][1])
        if cur and n_rows + k > rows:
            batches.append(cur)
            cur, n_rows = [], 0
        cur.append(i)
        n_rows += k
    if cur:
        batches.append(cur)
    return batches


@torch.inference_mode()
def score_batch(
    model: torch.nn.Module, items: Sequence[tuple[list[int], list[list[int]]]], pad_id: int,
    side: str = "left",
) -> list[AliasScores]:
    """Teacher-force every alias of every fact in ``items`` (prompt ids, [alias ids]) in one batch."""
    conts = [c for _, cs in items for c in cs]
    rows = [f for f, (_, cs) in enumerate(items) for _ in cs]
    out = continuation_logprobs(model, [p for p, _ in items], conts, pad_id, rows, side)
    # one transfer to Python lists, then plain indexing (per-row tensor ops cost more than the model here)
    logp_l = out.logp.tolist()
    greedy_l = out.greedy.all(dim=-1).tolist()
    results: list[AliasScores] = []
    r = 0
    for _, cs in items:
        lps, toks, greedy = [], [], []
        for c in cs:
            t = logp_l[r][: len(c)]
            toks.append(t)
            lps.append(float(sum(t)))
            greedy.append(bool(greedy_l[r]))
            r += 1
        results.append(AliasScores(lps, toks, greedy))
    return results


def score_items(
    model: torch.nn.Module, items: Sequence[tuple[list[int], list[list[int]]]], pad_id: int,
    config: ScoringConfig | None = None, on_batch: Callable[[int], None] | None = None,
) -> list[AliasScores]:
    """Teacher-force all facts, sorted by packed length and batched; results in input order.

    ``on_batch(n_facts)`` is called after each batch (for progress bars).
    """
    config = config or ScoringConfig()
    packed = [len(p) + sum(len(c) - 1 for c in cs) for p, cs in items]  # a fact's row in ``pack_rows``
    order = sorted(range(len(items)), key=lambda i: packed[i])
    results: list[AliasScores | None] = [None] * len(items)
    for batch in _batches(items, order, config.batch_size):
        for i, res in zip(batch, score_batch(model, [items[i] for i in batch], pad_id, config.padding_side)):
            results[i] = res
        if on_batch is not None:
            on_batch(len(batch))
    return [r for r in results if r is not None]
