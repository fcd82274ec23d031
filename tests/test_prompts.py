"""Prompt building and the lm-eval encoding contract."""

from __future__ import annotations

import pytest

from massshift.lm.prompts import (
    PromptConfig,
    PromptError,
    answer_ends,
    build_prompt,
    chat_turn,
    continuation,
    continuations,
    encode_facts,
    encode_pair,
    encode_prompt,
    stop_texts,
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


# A template that ends each turn with an end-of-turn marker, as SmolLM2's <|im_end|> does.
EOT_TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}<eos>\n{% endfor %}"
                "{% if add_generation_prompt %}<assistant>{% endif %}")
# A template that only breaks the line after a turn (and always opens an assistant turn).
LINE_TEMPLATE = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}<assistant>"


def _with_template(tokenizer, template):
    import copy

    tok = copy.deepcopy(tokenizer)
    tok.chat_template = template
    return tok


def test_chat_turn_reads_the_end_of_turn_marker_from_the_template(tokenizer):
    tok = _with_template(tokenizer, EOT_TEMPLATE)
    assert chat_turn(tok) == ("", "<eos>")
    chat = PromptConfig(chat=True)
    assert answer_ends(chat, tok) == ("<eos>", "\n")
    assert continuations("Paris", chat, tok) == ["Paris<eos>", "Paris\n"]
    assert continuation("Paris", chat, tok) == "Paris<eos>"
    assert stop_texts(chat, tok) == ("\n", "<eos>")
    # the plain contract under chat when asked for, and for plain prompts
    bare = PromptConfig(chat=True, chat_answer=False)
    assert continuations("Paris", bare, tok) == [" Paris\n"]
    assert stop_texts(bare, tok) == ("\n",)
    assert continuations("Paris", PromptConfig(), tok) == [" Paris\n"]


def test_chat_turn_after_an_answer_prefix_continues_the_sentence(tokenizer):
    tok = _with_template(tokenizer, EOT_TEMPLATE)
    cfg = PromptConfig(chat=True, answer_prefix="The answer is")
    assert continuations("Paris", cfg, tok) == [" Paris<eos>", " Paris\n", " Paris."]


def test_line_break_template_has_no_marker_and_no_leading_space(tokenizer):
    tok = _with_template(tokenizer, LINE_TEMPLATE)
    assert chat_turn(tok) == ("", "")
    chat = PromptConfig(chat=True)
    assert answer_ends(chat, tok) == ("\n",)
    assert continuations("Paris", chat, tok) == ["Paris\n"]
    assert stop_texts(chat, tok) == ("\n",)


def test_chat_turn_changes_the_cache_key_only_under_chat():
    assert "chat_answer" not in PromptConfig().to_dict()
    assert "chat_answer" not in PromptConfig(chat=True, chat_answer=False).to_dict()
    assert PromptConfig(chat=True).to_dict()["chat_answer"] == "template"
    assert PromptConfig(chat_answer=False).to_dict() == PromptConfig().to_dict()


def test_chat_turn_without_a_template_is_an_error(tokenizer):
    with pytest.raises(PromptError, match="chat template"):
        chat_turn(tokenizer)


def test_chat_turn_encoding_scores_what_a_plain_forward_pass_gives(tokenizer, tiny_model):
    """The template-derived continuation goes through the same kernel: its log-prob equals the sum
    of log-softmax of one plain forward pass over prompt + continuation."""
    import torch

    from massshift.lm.logprobs import continuation_logprobs

    tok = _with_template(tokenizer, EOT_TEMPLATE)
    cfg = PromptConfig(chat=True, instruction="Answer with the name only.")
    [(prompt, conts)] = encode_facts(tok, ["What is the capital of France?"], [["Paris"]], cfg)
    assert [tok.decode(c) for c in conts] == ["Paris<eos>", "Paris\n"]
    assert tok.decode(prompt).endswith("<assistant>")
    got = continuation_logprobs(tiny_model, [prompt], conts, tok.pad_token_id, [0] * len(conts)).logp.sum(-1)
    for row, cont in enumerate(conts):
        ids = torch.tensor([prompt + cont])
        with torch.no_grad():
            logp = torch.log_softmax(tiny_model(ids).logits[0].float(), -1)
        want = sum(logp[len(prompt) - 1 + j, t].item() for j, t in enumerate(cont))
        assert got[row].item() == pytest.approx(want, abs=1e-4)
