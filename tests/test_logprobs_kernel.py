"""One teacher-forcing kernel: the trainers' log-probs equal the scoring path's and a plain HF forward pass."""

from __future__ import annotations

import copy

import pytest
import torch

from massshift.lm.logprobs import continuation_logprobs, score_batch
from massshift.train.common import completion_logprobs

PROMPTS = [[5, 6, 7], [8], [9, 10], [5, 6, 7]]
COMPS = [[11, 12], [13, 14, 15, 16], [17], [20, 21, 2]]


def _plain(model, prompt, comp, temperature=1.0):
    """Per-token log-probs of ``comp`` after ``prompt`` from one unpadded forward pass, computed here."""
    with torch.no_grad():
        logits = model(torch.tensor([prompt + comp])).logits[0].float() / temperature  # (len, vocab)
    logp = torch.log_softmax(logits, -1)[len(prompt) - 1: len(prompt) + len(comp) - 1]
    return logp.gather(-1, torch.tensor(comp)[:, None])[:, 0]  # (len(comp),)


@pytest.mark.parametrize("model_name", ["tiny_model", "tiny_gpt2"])
def test_training_scoring_and_plain_forward_agree(model_name, request):
    model = request.getfixturevalue(model_name)
    train_logp, mask, _ = completion_logprobs(model, PROMPTS, COMPS, pad_id=0)  # (rows, C), with grad
    assert train_logp.requires_grad
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0], [1, 1, 1, 0]]
    scored = score_batch(model, [(p, [c]) for p, c in zip(PROMPTS, COMPS)], pad_id=0)
    for i, (p, c) in enumerate(zip(PROMPTS, COMPS)):
        plain = _plain(model, p, c)
        training = train_logp[i, : len(c)].detach()
        scoring = torch.tensor(scored[i].token_logps[0])
        assert torch.allclose(training, plain, atol=1e-5)
        assert torch.allclose(scoring, plain, atol=1e-5)
        assert torch.allclose(training, scoring, atol=1e-6)
        assert torch.all(train_logp[i, len(c):] == 0)


def test_temperature_and_entropy(tiny_model):
    hot = continuation_logprobs(tiny_model, PROMPTS, COMPS, 0, temperature=0.5, with_entropy=True)
    for i, (p, c) in enumerate(zip(PROMPTS, COMPS)):
        assert torch.allclose(hot.logp[i, : len(c)].detach(), _plain(tiny_model, p, c, 0.5), atol=1e-5)
        assert torch.all(hot.entropy[i, : len(c)] > 0) and torch.all(hot.entropy[i, len(c):] == 0)
    assert not hot.entropy.requires_grad


def test_shared_prompt_rows_equal_repeated_prompts(tiny_model):
    comps = [[11, 12], [13], [14, 15, 16]]
    shared = continuation_logprobs(tiny_model, [[5, 6, 7]], comps, 0, prompt_rows=[0, 0, 0]).logp
    repeated = continuation_logprobs(tiny_model, [[5, 6, 7]] * 3, comps, 0).logp
    assert torch.allclose(shared, repeated, atol=1e-6)


def test_gradients_reach_the_prompt_pass(tiny_model):
    model = copy.deepcopy(tiny_model)
    logp, mask, _ = completion_logprobs(model, [[5, 6, 7]], [[20, 21, 2]], 0)
    (logp * mask).sum().backward()
    emb = model.get_input_embeddings().weight.grad
    assert emb is not None and emb[5].abs().sum() > 0  # a prompt token: the gradient runs through the KV cache


def test_empty_continuation_is_an_error(tiny_model):
    with pytest.raises(ValueError, match="continuation has no tokens"):
        continuation_logprobs(tiny_model, [[5]], [[]], 0)
