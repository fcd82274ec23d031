"""Teacher forcing against a plain forward pass; batch-size and padding invariance."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import FACTS
from massshift.lm.logprobs import AliasScores, ScoringConfig, score_items
from massshift.lm.prompts import PromptConfig, encode_facts


def _items(tokenizer, config=PromptConfig()):
    return encode_facts(tokenizer, [f["question"] for f in FACTS], [f["answers"] for f in FACTS], config)


def _plain_logp(model, prompt, cont):
    """Summed log p(cont | prompt) from one plain forward pass of the whole sequence."""
    with torch.no_grad():
        logits = model(torch.tensor([prompt + cont])).logits[0].float()
    logp = torch.log_softmax(logits, -1)
    toks = [logp[len(prompt) - 1 + j, cont[j]].item() for j in range(len(cont))]
    greedy = all(logits[len(prompt) - 1 + j].argmax().item() == cont[j] for j in range(len(cont)))
    return toks, greedy


@pytest.mark.parametrize("model_name", ["tiny_model", "tiny_gpt2"])
def test_logps_equal_plain_forward(request, tokenizer, model_name):
    model = request.getfixturevalue(model_name)
    items = _items(tokenizer)
    results = score_items(model, items, tokenizer.pad_token_id, ScoringConfig(batch_size=5))
    assert len(results) == len(FACTS)
    n_multi = 0
    for (prompt, conts), res in zip(items, results):
        assert len(res.alias_logps) == len(conts)
        for c, lp, toks, greedy in zip(conts, res.alias_logps, res.token_logps, res.alias_is_greedy):
            ref, ref_greedy = _plain_logp(model, prompt, c)
            assert len(toks) == len(c)
            n_multi += len(c) > 1
            assert toks == pytest.approx(ref, abs=1e-4)
            assert lp == pytest.approx(sum(ref), abs=1e-4)
            assert greedy == ref_greedy
        expected = math.log(sum(math.exp(v) for v in res.alias_logps))
        assert res.logp_gold == pytest.approx(expected, abs=1e-6)
    assert n_multi > 5  # multi-token continuations were exercised


def test_terminator_is_scored(tokenizer, tiny_model):
    config = PromptConfig()
    (prompt, conts), = encode_facts(tokenizer, ["What is the capital of France?"], [["Paris"]], config)
    nl = tokenizer("\n", add_special_tokens=False).input_ids
    assert conts[0][-len(nl):] == nl
    without = encode_facts(tokenizer, ["What is the capital of France?"], [["Paris"]],
                           PromptConfig(terminator="."))[0][1][0]
    res = score_items(tiny_model, [(prompt, conts)], tokenizer.pad_token_id)[0]
    ref, _ = _plain_logp(tiny_model, prompt, conts[0])
    assert res.alias_logps[0] == pytest.approx(sum(ref), abs=1e-4)
    assert without != conts[0]


@pytest.mark.parametrize("side", ["left", "right"])
def test_batch_size_and_padding_invariance(tokenizer, tiny_model, side):
    items = _items(tokenizer)
    one = score_items(tiny_model, items, tokenizer.pad_token_id, ScoringConfig(batch_size=1, padding_side="left"))
    many = score_items(tiny_model, items, tokenizer.pad_token_id, ScoringConfig(batch_size=32, padding_side=side))
    for a, b in zip(one, many):
        for x, y in zip(a.alias_logps, b.alias_logps):
            assert abs(x - y) < 1e-4
        assert a.alias_is_greedy == b.alias_is_greedy


def test_alias_scores_properties():
    s = AliasScores([-1.0, -3.0, float("nan")], [[-0.5, -0.5], [-3.0], [float("nan")]], [False, True, False])
    assert s.best == 0
    assert s.logp_per_token == pytest.approx(-0.5)
    assert s.is_greedy
    assert s.logp_gold == pytest.approx(math.log(math.exp(-1) + math.exp(-3)))
    assert AliasScores([-math.inf], [[-math.inf]], [False]).logp_gold == -math.inf
    assert math.isnan(AliasScores([math.nan], [[math.nan]], [False]).logp_gold)


def test_config_validation():
    with pytest.raises(ValueError, match="batch_size"):
        ScoringConfig(batch_size=0)
    with pytest.raises(ValueError, match="padding_side"):
        ScoringConfig(padding_side="middle")
