"""Prompt building and the lm-eval encoding contract."""

from __future__ import annotations

import pytest

from massshift.lm.prompts import (
    PromptConfig,
    PromptError,
    build_prompt,
    continuation,
    encode_facts,
    encode_pair,
    encode_prompt,
)


def test_default_format():
    cfg = PromptConfig()
    assert build_prompt("Who wrote Hamlet?", cfg) == "Q: Who wrote Hamlet?\nA:"
    assert continuation("Shakespeare", cfg) == " Shakespeare\n"


def test_k_shot_prefix_uses_same_format():
    cfg = PromptConfig(shots=(("Q1?", "A1"), ("Q2?", "A2")))
    assert build_prompt("Q3?", cfg) == "Q: Q1?\nA: A1\nQ: Q2?\nA: A2\nQ: Q3?\nA:"


def test_answer_prefix_plain():
    cfg = PromptConfig(answer_prefix=" The answer is")
    assert build_prompt("Q?", cfg) == "Q: Q?\nA: The answer is"


def test_split_matches_joint_tokenisation(tokenizer):
    cfg = PromptConfig()
    prompt = build_prompt("What is the capital of France?", cfg)
    ctx, cont = encode_pair(tokenizer, prompt, continuation("Paris", cfg), cfg)
    whole = tokenizer(prompt + " Paris\n").input_ids
    assert ctx + cont == whole
    assert ctx == encode_prompt(tokenizer, prompt, cfg)
    assert tokenizer.decode(cont) == " Paris\n"


def test_trailing_space_moves_to_continuation(tokenizer):
    cfg = PromptConfig(answer_template="{answer}")
    ctx, cont = encode_pair(tokenizer, "Q: Who?\nA: ", "Paris\n", cfg)
    assert tokenizer.decode(ctx) == "Q: Who?\nA:"
    assert tokenizer.decode(cont) == " Paris\n"


def test_empty_continuation_is_an_error(tokenizer):
    with pytest.raises(PromptError, match="no tokens"):
        encode_pair(tokenizer, "Q: x\nA:", "", PromptConfig())


class _MergingTokenizer:
    """A stand-in whose tokens swallow everything after the prompt (a boundary-spanning token)."""

    eos_token_id = None

    def __call__(self, text, add_special_tokens=True):
        class _Enc:
            input_ids = [len(text.split("A:")[0])]
        return _Enc()


def test_encode_facts_names_the_fact(tokenizer):
    with pytest.raises(PromptError, match="fact f1, answer 'x'.*1053"):
        encode_facts(_MergingTokenizer(), ["What?"], [["x"]], PromptConfig(), fact_ids=["f1"])
    items = encode_facts(tokenizer, ["A?", "B?"], [["x", "y z"], ["w"]], PromptConfig(), fact_ids=["a", "b"])
    assert len(items) == 2 and len(items[0][1]) == 2
    assert items[0][0] == encode_prompt(tokenizer, "Q: A?\nA:", PromptConfig())


def test_chat_without_template_is_an_error(tokenizer):
    with pytest.raises(PromptError, match="chat template"):
        build_prompt("Q?", PromptConfig(chat=True), tokenizer)


def test_chat_template_no_double_bos(tokenizer):
    import copy

    tok = copy.deepcopy(tokenizer)
    tok.chat_template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}<assistant>"
    cfg = PromptConfig(chat=True, instruction="Answer with the name only.", answer_prefix=" The answer is")
    text = build_prompt("Who wrote Hamlet?", cfg, tok)
    assert text == "<user>Answer with the name only.\nWho wrote Hamlet?\n<assistant> The answer is"
    ids = encode_prompt(tok, text, cfg)
    assert ids == tok(text, add_special_tokens=False).input_ids


def test_config_validation():
    with pytest.raises(ValueError, match="question"):
        PromptConfig(template="no field")
    with pytest.raises(ValueError, match="answer"):
        PromptConfig(answer_template="x")
    with pytest.raises(ValueError, match="terminator"):
        PromptConfig(terminator="")
