"""Packed teacher forcing (``packing.pack_rows``): the layout, and numbers equal to one plain forward
pass per (prompt, continuation), however the rows of a batch differ in length or order."""

from __future__ import annotations

import pytest
import torch

from massshift.lm.logprobs import continuation_logprobs
from massshift.lm.packing import pack_rows


def _plain(model, prompt, comp):
    """Per-token log-probs of ``comp`` after ``prompt`` from one unpadded forward pass, computed here."""
    with torch.no_grad():
        logits = model(torch.tensor([prompt + comp])).logits[0].float()  # (len, vocab)
    logp = torch.log_softmax(logits, -1)[len(prompt) - 1: len(prompt) + len(comp) - 1]
    greedy = logp.argmax(-1) == torch.tensor(comp)
    return logp.gather(-1, torch.tensor(comp)[:, None])[:, 0], greedy  # (len(comp),) each


def test_short_prompts_share_a_row():
    packed = pack_rows([[5, 6, 7, 8], [9], [10]], [[11, 12], [13, 14], [15]], [0, 1, 2], pad_id=0, side="left")
    assert packed.ids.tolist()[0] == [5, 6, 7, 8, 11]
    assert packed.ids.tolist()[1] == [0, 0, 9, 13, 10]  # prompts 1 and 2 fill the second row, padded left
    assert packed.group.tolist()[1] == [-1, -1, 1, 1, 2]
    assert packed.positions.tolist()[1] == [0, 0, 0, 1, 0]
    allowed = packed.attention_mask(torch.float32)[1, 0] == 0
    assert allowed[4].tolist() == [False, False, False, False, True]  # prompt 2 sees nothing of prompt 1


def test_layout_by_hand():
    packed = pack_rows([[5, 6], [7]], [[10, 11, 12], [13], [14, 15]], [0, 1, 0], pad_id=0, side="right")
    # row 0: prompt 5 6, then 10 11 (of 10 11 12), then 14 (of 14 15); row 1: prompt 7 (13 has one token)
    assert packed.ids.tolist() == [[5, 6, 10, 11, 14], [7, 0, 0, 0, 0]]
    assert packed.positions.tolist() == [[0, 1, 2, 3, 2], [0, 0, 0, 0, 0]]
    assert packed.segment.tolist() == [[0, 0, 1, 1, 2], [0, -1, -1, -1, -1]]
    assert packed.group.tolist() == [[0, 0, 0, 0, 0], [1, -1, -1, -1, -1]]
    assert packed.keep.tolist() == [[False, True, True, True, True], [True, False, False, False, False]]
    # kept positions in order: (0,1) (0,2) (0,3) (0,4) (1,0) -> 0 1 2 3 4
    assert packed.source.tolist() == [[0, 1, 2], [4, 0, 0], [0, 3, 0]]
    assert packed.target.tolist() == [[10, 11, 12], [13, 0, 0], [14, 15, 0]]
    allowed = packed.attention_mask(torch.float32)[0, 0] == 0  # (query, key)
    assert allowed[4].tolist() == [True, True, False, False, True]  # 14 sees the prompt and itself only
    assert allowed[3].tolist() == [True, True, True, True, False]


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("model_name", ["tiny_model", "tiny_gpt2"])
def test_uneven_rows_equal_plain_forward(request, model_name, side):
    model = request.getfixturevalue(model_name)
    prompts = [[5, 6, 7, 8, 9], [10], [11, 12]]
    comps = [[20], [21, 22, 23, 24, 25, 26], [27, 28], [29, 30, 31], [32], [33, 34, 35, 36, 37, 38, 39, 40]]
    rows = [2, 0, 0, 1, 2, 0]  # interleaved, and prompt 0 has three continuations of very different lengths
    with torch.inference_mode():
        out = continuation_logprobs(model, prompts, comps, 0, rows, side=side)
    for r, (p, c) in enumerate(zip(rows, comps)):
        ref, ref_greedy = _plain(model, prompts[p], c)
        assert torch.allclose(out.logp[r, : len(c)], ref, atol=1e-5)
        assert out.greedy[r, : len(c)].tolist() == ref_greedy.tolist()
        assert torch.all(out.logp[r, len(c):] == 0) and torch.all(out.mask[r, len(c):] == 0)


class _NoLogitsToKeep(torch.nn.Module):
    """A model whose forward has no ``logits_to_keep``: the kernel selects the scoring positions itself."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=False):
        return self.inner(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                          use_cache=use_cache)


def test_models_without_logits_to_keep(tiny_model):
    prompts, comps = [[5, 6, 7], [8]], [[11, 12], [13, 14, 15], [16]]
    with torch.inference_mode():
        ours = continuation_logprobs(tiny_model, prompts, comps, 0, [0, 1, 0]).logp
        plain = continuation_logprobs(_NoLogitsToKeep(tiny_model), prompts, comps, 0, [0, 1, 0]).logp
    assert torch.allclose(ours, plain, atol=1e-6)
