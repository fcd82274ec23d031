"""Packed rows for teacher forcing: each prompt with every continuation that follows it, short prompts
sharing a row, and the attention mask that keeps them apart (``pack_rows``; used by
``logprobs.continuation_logprobs``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class PackedRows:
    """Prompts with all their continuations, laid out in rows (``pack_rows``); K positions keep their logits."""

    ids: torch.Tensor  # (rows, W) token ids; pad_id at padding
    positions: torch.Tensor  # (rows, W) position ids: a continuation's tokens go on from the end of its prompt
    group: torch.Tensor  # (rows, W) which of the row's prompts a token belongs to; -1 at padding
    segment: torch.Tensor  # (rows, W) 0 for prompt tokens, k + 1 for the prompt's k-th continuation, -1 at padding
    keep: torch.Tensor  # (rows, W) bool: the positions whose logits score a token
    source: torch.Tensor  # (R, C) long: index into the K kept positions that predicts each token; 0 at padding
    target: torch.Tensor  # (R, C) long: each continuation's tokens; 0 at padding
    mask: torch.Tensor  # (R, C) bool: real tokens

    def attention_mask(self, dtype: torch.dtype) -> torch.Tensor:
        """The (rows, 1, W, W) additive mask: a prompt token sees its prompt up to itself; a continuation
        token sees its whole prompt and its own continuation up to itself, never another continuation,
        another prompt nor padding (padding sees earlier padding, so that no row is empty)."""
        grp, seg = self.group, self.segment
        causal = torch.ones(seg.shape[1], seg.shape[1], dtype=torch.bool, device=seg.device).tril()
        same_fact = grp[:, None, :] == grp[:, :, None]  # (rows, query, key)
        seen = (seg[:, None, :] == 0) | (seg[:, None, :] == seg[:, :, None])
        allowed = causal[None] & same_fact & seen
        zero = torch.zeros((), dtype=dtype, device=seg.device)
        return torch.where(allowed, zero, torch.finfo(dtype).min)[:, None]


def _first_fit(lengths: Sequence[int]) -> list[list[int]]:
    """Items (indices) in rows as wide as the longest item, first fit in order of decreasing length."""
    width = max(lengths)
    rows: list[list[int]] = []
    free: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        row = next((k for k, room in enumerate(free) if room >= lengths[i]), None)
        if row is None:
            rows.append([])
            free.append(width)
            row = len(rows) - 1
        rows[row].append(i)
        free[row] -= lengths[i]
    return rows


def pack_rows(
    prompt_ids: Sequence[Sequence[int]], continuation_ids: Sequence[Sequence[int]], prompt_rows: Sequence[int],
    pad_id: int, side: str,
) -> PackedRows:
    """Lay each prompt out with every continuation that follows it, and several short prompts in a row.

    A continuation ``c`` contributes ``c[:-1]``: the prompt's last position predicts ``c[0]`` and the
    position of ``c[j - 1]`` predicts ``c[j]``, so every token runs through the model once and only
    scoring positions reach the output layer. Prompts (each with its continuations) share rows as
    wide as the longest, first fit (``_first_fit``); rows are padded on ``side``.
    """
    per_prompt: list[list[int]] = [[] for _ in prompt_ids]
    for r, p in enumerate(prompt_rows):
        per_prompt[p].append(r)
    seqs, poss, segs, keeps = [], [], [], []
    where: list[tuple[int, list[int]]] = [(0, [])] * len(continuation_ids)  # prompt, its columns in the prompt's run
    for p, (prompt, rows) in enumerate(zip(prompt_ids, per_prompt)):
        seq, pos, seg = list(prompt), list(range(len(prompt))), [0] * len(prompt)
        for k, r in enumerate(rows):
            body = continuation_ids[r][:-1]
            where[r] = (p, [len(prompt) - 1] + list(range(len(seq), len(seq) + len(body))))
            seq += body
            pos += range(len(prompt), len(prompt) + len(body))
            seg += [k + 1] * len(body)
        seqs.append(seq)
        poss.append(pos)
        segs.append(seg)
        keeps.append([False] * (len(prompt) - 1) + [True] * (len(seq) - len(prompt) + 1))
    layout = _first_fit([len(s) for s in seqs])
    width = max(len(s) for s in seqs)
    start = [0] * len(seqs)  # each prompt's first column in its row
    for row in layout:
        used = sum(len(seqs[p]) for p in row)
        col = width - used if side == "left" else 0
        for p in row:
            start[p] = col
            col += len(seqs[p])

    def padded(runs: list[list[Any]], fill: Any, dtype: torch.dtype) -> torch.Tensor:
        out = torch.full((len(layout), width), fill, dtype=dtype)
        for i, row in enumerate(layout):
            for p in row:
                out[i, start[p]: start[p] + len(runs[p])] = torch.tensor(runs[p], dtype=dtype)
        return out

    row_of = {p: i for i, row in enumerate(layout) for p in row}
    keep = padded(keeps, False, torch.bool)
    kept_index = (keep.flatten().cumsum(0) - 1).view(keep.shape)  # (rows, W): rank among kept positions
    n_cols = max(len(c) for c in continuation_ids)
    source = torch.zeros((len(continuation_ids), n_cols), dtype=torch.long)
    target = torch.zeros_like(source)
    mask = torch.zeros((len(continuation_ids), n_cols), dtype=torch.bool)
    for r, c in enumerate(continuation_ids):
        p, cols = where[r]
        source[r, : len(c)] = kept_index[row_of[p], [start[p] + j for j in cols]]
        target[r, : len(c)] = torch.tensor(c, dtype=torch.long)
        mask[r, : len(c)] = True
    return PackedRows(padded(seqs, pad_id, torch.long), padded(poss, 0, torch.long),
                      padded([[p] * len(s) for p, s in enumerate(seqs)], -1, torch.long),
                      padded(segs, -1, torch.long), keep, source, target, mask)
