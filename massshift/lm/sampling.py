"""Greedy and sampled answers, n samples per fact from one prompt pass.

Per batch of facts the prompts run once (left-padded, explicit positions, KV
cache); the cache is then gathered into 1 + n rows per fact: row 0 decodes
greedily, rows 1..n sample at ``temperature`` with optional nucleus (top-p)
truncation. Rows leave the batch as soon as they emit the terminator, one of
the extra ``stops`` (a chat template's end-of-turn marker) or EOS, so short
answers cost few steps.

Seeding: each fact has its own ``torch.Generator`` seeded from
(seed, fact_id), and at every step it draws one uniform number per sample row
(inverse-CDF sampling), whatever else is in the batch. So re-running a subset
of facts, or the same facts in another order, gives the same samples (up to
float round-off in the logits, which padding does not otherwise change).
Temperature 0 makes every sample row greedy.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from massshift.configio import ConfigIO, help_field
from massshift.data.matching import extract_answer
from massshift.lm.logprobs import forward_cached, run_prompts
from massshift.seeds import fact_seed

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationConfig(ConfigIO):
    """Greedy decoding and sampling."""

    n_samples: int = help_field(128, help="Samples per fact (0: greedy only). The paper uses 128.")
    temperature: float = help_field(1.0, help="Sampling temperature (0: every sample is the greedy answer).")
    top_p: float = help_field(1.0, help="Nucleus (top-p) truncation of the sampling distribution (1.0: none).")
    max_new_tokens: int = help_field(16, help=(
        "Decoding stops here if no terminator came; keep it large enough for the longest answer "
        "(too small silently zeroes rewards, TRL issue 5697)."))
    seed: int = help_field(0, help="Base seed; each fact's generator is seeded from (seed, fact_id).")
    max_rows: int = help_field(256, help="Most decoding rows (facts x (1 + n_samples)) in one batch.")

    def __post_init__(self) -> None:
        if self.n_samples < 0:
            raise ValueError(f"n_samples must be >= 0, got {self.n_samples}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 is greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.max_rows < 1:
            raise ValueError(f"max_rows must be >= 1, got {self.max_rows}")


@dataclass
class Generations:
    """One fact's decoded answers (cut at the terminator and stripped)."""

    greedy: str
    samples: list[str]
    greedy_ids: list[int]
    sample_ids: list[list[int]]  # generated token ids of each sample, stop token included
    truncated: int  # rows that hit max_new_tokens without a terminator


_STOP_CACHE: dict[tuple[int, int, tuple[str, ...], tuple[int, ...]], tuple[Any, torch.Tensor]] = {}


def stop_token_mask(tokenizer: Any, terminator: str, extra_ids: Sequence[int] = (),
                    stops: Sequence[str] = ()) -> torch.Tensor:
    """A (vocab,) bool mask of tokens that end an answer: any token whose text holds the
    terminator or one of ``stops``, plus EOS and ``extra_ids``. Computed once per tokenizer.

    The cache holds a weak reference to the tokenizer and checks it on every hit: ``id()`` alone
    is reused once a tokenizer is freed, and a stale mask from another vocabulary would be wrong.
    """
    ends = tuple(dict.fromkeys((terminator, *stops)))
    key = (id(tokenizer), len(tokenizer), ends, tuple(extra_ids))
    hit = _STOP_CACHE.get(key)
    if hit is not None and hit[0]() is tokenizer:
        return hit[1]
    vocab = len(tokenizer)
    texts = tokenizer.batch_decode([[i] for i in range(vocab)])
    mask = torch.tensor([any(e in t for e in ends) for t in texts], dtype=torch.bool)
    for i in (tokenizer.eos_token_id, *extra_ids):
        if i is not None and 0 <= i < vocab:
            mask[i] = True
    try:
        ref = weakref.ref(tokenizer)
    except TypeError:  # not weak-referenceable: keep it alive instead, so its id cannot be reused
        ref = (lambda t: (lambda: t))(tokenizer)
    _STOP_CACHE[key] = (ref, mask)
    return mask


def _choose(logp: torch.Tensor, u: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """Sample one token per row by inverse CDF: logp (rows, vocab), u (rows,) uniform in [0, 1)."""
    if temperature == 0:
        return logp.argmax(-1)
    probs = torch.softmax(logp / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        keep = (sorted_p.cumsum(-1) - sorted_p) < top_p  # always keeps the top token
        sorted_p = sorted_p * keep
        cdf = sorted_p.cumsum(-1)
        idx = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True).clamp(max=probs.shape[-1] - 1)
        return order.gather(-1, idx)[:, 0]
    cdf = probs.cumsum(-1)
    idx = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True)
    return idx.clamp(max=probs.shape[-1] - 1)[:, 0]


@torch.inference_mode()
def generate_batch(
    model: torch.nn.Module, prompts: Sequence[Sequence[int]], fact_ids: Sequence[str], tokenizer: Any,
    config: GenerationConfig, terminator: str = "\n", stops: Sequence[str] = (),
) -> list[Generations]:
    """Greedy answer and ``config.n_samples`` samples for each prompt, in one decoding batch;
    ``stops`` end an answer like the terminator (``prompts.stop_texts``)."""
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    stop = stop_token_mask(tokenizer, terminator, stops=stops).to(device)
    per = config.n_samples + 1
    logp, cache, pmask, plen = run_prompts(model, prompts, pad_id, "left")
    n_facts = len(prompts)
    row_fact = torch.arange(n_facts, device=device).repeat_interleave(per)
    is_greedy_row = (torch.arange(n_facts * per, device=device) % per) == 0
    gens = [torch.Generator().manual_seed(fact_seed(config.seed, f)) for f in fact_ids]
    cache.reorder_cache(row_fact)
    mask = pmask[row_fact]
    pos = plen[row_fact].clone()
    cur = logp[row_fact]  # (rows, vocab)
    alive = torch.arange(n_facts * per, device=device)  # global row ids still decoding
    out_ids: list[list[int]] = [[] for _ in range(n_facts * per)]
    finished = [False] * (n_facts * per)
    for step in range(config.max_new_tokens):
        u_all = torch.stack([torch.rand(per, generator=g) for g in gens]).reshape(-1).to(device)
        u = u_all[alive]
        tok = _choose(cur, u, config.temperature, config.top_p)
        greedy_tok = cur.argmax(-1)
        tok = torch.where(is_greedy_row[alive], greedy_tok, tok)
        done = stop[tok]
        for r, t, d in zip(alive.tolist(), tok.tolist(), done.tolist()):
            out_ids[r].append(t)
            finished[r] = d
        keep = (~done).nonzero()[:, 0]
        if keep.numel() == 0 or step == config.max_new_tokens - 1:
            break
        alive, tok = alive[keep], tok[keep]
        cache.reorder_cache(keep)
        mask = torch.cat([mask[keep], torch.ones((len(keep), 1), dtype=mask.dtype, device=device)], dim=1)
        pos = pos[keep]
        logits, cache = forward_cached(model, cache, input_ids=tok[:, None], attention_mask=mask,
                                       position_ids=pos[:, None])
        cur = torch.log_softmax(logits[:, -1, :].float(), dim=-1)
        pos = pos + 1
    texts = tokenizer.batch_decode(out_ids, skip_special_tokens=True)
    answers = [_cut(t, terminator, stops) for t in texts]
    results = []
    for f in range(n_facts):
        rows = range(f * per, (f + 1) * per)
        results.append(Generations(
            greedy=answers[f * per], samples=[answers[r] for r in rows][1:],
            greedy_ids=out_ids[f * per], sample_ids=[out_ids[r] for r in rows][1:], truncated=sum(not finished[r] for r in rows),
        ))
    return results


def _cut(text: str, terminator: str, stops: Sequence[str]) -> str:
    """The answer in a decoded generation: cut at the first stop (special tokens are already gone)."""
    for s in stops:
        if s:
            text = text.split(s, 1)[0]
    return extract_answer(text, terminator)


def generate(
    model: torch.nn.Module, prompts: Sequence[Sequence[int]], fact_ids: Sequence[str], tokenizer: Any,
    config: GenerationConfig | None = None, terminator: str = "\n",
    on_batch: Callable[[int], None] | None = None, stops: Sequence[str] = (),
) -> list[Generations]:
    """Greedy answers and samples for every prompt, batched by ``config.max_rows``; input order kept."""
    config = config or GenerationConfig()
    per_batch = max(1, config.max_rows // (config.n_samples + 1))
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    results: list[Generations | None] = [None] * len(prompts)
    for s in range(0, len(order), per_batch):
        idx = order[s: s + per_batch]
        outs = generate_batch(model, [prompts[i] for i in idx], [fact_ids[i] for i in idx], tokenizer,
                              config, terminator, stops)
        for i, o in zip(idx, outs):
            results[i] = o
        if on_batch is not None:
            on_batch(len(idx))
    return [r for r in results if r is not None]
