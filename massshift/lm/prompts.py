"""Prompts: the only module that decides templates, white space and BOS.

Zero-shot, no chain of thought. The default prompt is
``"Q: {question}\\nA:"`` and the answer continuation is ``" {answer}"`` followed
by the terminator ``"\\n"``. A chat template is used only when asked for; a
k-shot prefix (for the baselines) repeats the same format for each shot.

Under a chat template the scored continuation is what the template itself writes
for an assistant turn (``chat_turn``): for SmolLM2 ``"Paris<|im_end|>"``, no
leading space, the end-of-turn marker as the answer's end, ``"\\n"`` also
accepted as an end; generation stops at either (``stop_texts``). The plain
contract is kept for plain prompts and for ``chat_answer=False``.

Encoding follows lm-evaluation-harness's loglikelihood contract
(``lm_eval/api/model.py``): trailing white space of the prompt moves to the
continuation, prompt and continuation are tokenised together and split at the
prompt's token count, so the continuation's tokens are exactly those the model
would generate; an empty continuation after the split is an error (lm-eval
issue 1053). Special tokens (BOS) are added by the tokenizer's own
post-processor for plain prompts and never on top of a chat template, whose
text already carries them (lm-eval issue 1841). Nothing here looks at a
model's name.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from massshift.configio import help_field

logger = logging.getLogger(__name__)


class PromptError(ValueError):
    """A prompt or continuation cannot be encoded as the contract requires."""


@dataclass(frozen=True)
class PromptConfig:
    """How questions become prompts and answers become scored continuations.

    Answer prefill, three modes: a fixed ``answer_prefix``; per-relation ``relation_prefixes``
    (from YAML, ``massshift.lm.prefill.load_prefix_spec``); ``self_prefix``. None is the default:
    the bare continuation after the prompt (docs/criteria.md, formats and prefill).
    """

    template: str = help_field("Q: {question}\nA:", help="Prompt template; must contain '{question}'.")
    answer_template: str = help_field(" {answer}", help="Scored continuation template; must contain '{answer}'.")
    terminator: str = help_field("\n", help="Appended to every scored continuation; generation stops at it.")
    chat: bool = help_field(False, help="Wrap the question in the tokenizer's chat template.")
    instruction: str = help_field("", help="With chat: a line put before the question in the user turn.")
    system: str = help_field("", help="With chat: an optional system message.")
    chat_answer: bool = help_field(True, help=(
        "With chat: score the answer as the chat template writes an assistant turn (no leading space, ended "
        "by the end-of-turn marker, '\\n' also accepted) instead of the plain ' {answer}' + terminator."))
    answer_prefix: str = help_field("", help=(
        "Text put after the prompt (after 'A:', or after the assistant header with chat); generation starts "
        "after it and the scored continuation is the bare answer. May hold {subject} and {relation}, filled "
        "from the fact."))
    shots: tuple[tuple[str, str], ...] = help_field(default_factory=tuple, help=(
        "k-shot examples as (question, answer) pairs, rendered in the same format before the question."))
    relation_prefixes: tuple[tuple[str, str], ...] = help_field(default_factory=tuple, help=(
        "(relation, template) pairs: a fact whose relation is listed gets that template (with {subject}) as "
        "its answer prefix instead of answer_prefix, e.g. ('capital', 'The capital of {subject} is')."))
    self_prefix: bool = help_field(False, help=(
        "The 'self' prefill: each fact's prefix is the model's own greedy lead-in before the first span naming "
        "an alias or a distractor; needs the model, so only scoring applies it."))
    question_prefixes: tuple[tuple[str, str], ...] = help_field(default_factory=tuple, help=(
        "(question, prefix) pairs: explicit per-question prefixes, before every other mode (a study freezes "
        "per-relation or self prefixes into them so trainers and baselines use the same prompts)."))
    end_marks: tuple[str, ...] | None = help_field(None, help=(
        "More strings that may end a scored answer besides the terminator; p(gold) sums over them. "
        "Default: ('.',) when any prefix is set, else none."))

    def __post_init__(self) -> None:
        if "{question}" not in self.template:
            raise ValueError(f"template must contain '{{question}}', got {self.template!r}")
        if "{answer}" not in self.answer_template:
            raise ValueError(f"answer_template must contain '{{answer}}', got {self.answer_template!r}")
        if not self.terminator:
            raise ValueError(
                "terminator must be non-empty: generation stops at it and the scored continuation "
                "includes it; the default is '\\n'"
            )
        shots = tuple(tuple(s) for s in self.shots)
        if any(len(s) != 2 for s in shots):
            raise ValueError("shots must be (question, answer) pairs")
        object.__setattr__(self, "shots", shots)
        rel = tuple(tuple(p) for p in (dict(self.relation_prefixes).items() if isinstance(
            self.relation_prefixes, dict) else self.relation_prefixes))
        if any(len(p) != 2 or not all(isinstance(x, str) and x for x in p) for p in rel):
            raise ValueError("relation_prefixes must be (relation, template) pairs of non-empty strings")
        object.__setattr__(self, "relation_prefixes", rel)
        qp = tuple(tuple(p) for p in (self.question_prefixes.items() if isinstance(self.question_prefixes, dict)
                                      else self.question_prefixes))
        if any(len(p) != 2 or not all(isinstance(x, str) for x in p) for p in qp):
            raise ValueError("question_prefixes must be (question, prefix) pairs of strings")
        object.__setattr__(self, "question_prefixes", qp)
        object.__setattr__(self, "_by_question", dict(qp))  # lookup table, not a field
        if self.end_marks is not None:
            marks = tuple(self.end_marks)
            if any(not isinstance(m, str) or not m or m == self.terminator for m in marks):
                raise ValueError(f"end_marks must be non-empty strings other than the terminator, got {marks!r}")
            object.__setattr__(self, "end_marks", marks)

    @property
    def prefix_active(self) -> bool:
        """Whether any answer prefill is set (fixed, per relation or self)."""
        return bool(self.answer_prefix or self.relation_prefixes or self.self_prefix or self.question_prefixes)

    @property
    def scored_ends(self) -> tuple[str, ...]:
        """The strings a scored answer may end with: the terminator first, then ``end_marks``."""
        marks = self.end_marks if self.end_marks is not None else ((".",) if self.prefix_active else ())
        return (self.terminator, *marks)

    def to_dict(self) -> dict[str, Any]:
        """All settings as plain values (for config.yaml and fingerprints)."""
        return {
            "template": self.template, "answer_template": self.answer_template,
            "terminator": self.terminator, "chat": self.chat, "instruction": self.instruction,
            "system": self.system, "answer_prefix": self.answer_prefix,
            "shots": [list(s) for s in self.shots],
            # prefill fields only when set, so fingerprints of older caches stay valid
            **({"relation_prefixes": [list(p) for p in self.relation_prefixes]} if self.relation_prefixes else {}),
            **({"self_prefix": True} if self.self_prefix else {}),
            **({"question_prefixes": {"n": len(self.question_prefixes), "sha256": hashlib.sha256(
                json.dumps(self.question_prefixes, ensure_ascii=False).encode()).hexdigest()[:16]}}
               if self.question_prefixes else {}),
            **({"scored_ends": list(self.scored_ends)} if len(self.scored_ends) > 1 else {}),
            # chat caches made before the template-derived continuation describe another string
            **({"chat_answer": "template"} if self.uses_chat_turn else {}),
        }

    @property
    def uses_chat_turn(self) -> bool:
        """Whether answers are scored as the chat template's assistant turn (``chat_turn``)."""
        return self.chat and self.chat_answer

    def fact_prefix(self, subject: Any = None, relation: Any = None, question: str | None = None) -> str:
        """The per-question, per-relation or fixed prefix of one fact (``self`` lead-ins are added by scoring)."""
        if question is not None and question in self._by_question:
            return self._by_question[question]
        template = dict(self.relation_prefixes).get(relation, self.answer_prefix) if relation else self.answer_prefix
        if "{" not in template:
            return template
        if not isinstance(subject, str) or not subject:
            raise PromptError(f"the answer prefix {template!r} needs the fact's subject, which is missing")
        try:
            return template.format(subject=subject, relation=relation or "")
        except (KeyError, IndexError) as err:
            raise PromptError(f"answer prefix {template!r}: unknown field {err}; use {{subject}} or {{relation}}") from None


def _plain_turn(question: str, config: PromptConfig) -> str:
    return config.template.format(question=question)


_TURN_MARK = "massshiftANSWERmark"


def chat_turn(tokenizer: Any) -> tuple[str, str]:
    """(lead, end): the text the tokenizer's chat template writes before and after an assistant message's
    content, after the generation prompt. ``end`` is what follows the content up to the first line break,
    white space stripped: the end-of-turn marker, ``("", "<|im_end|>")`` for SmolLM2, ``""`` for a template
    that only breaks the line. Raises ``PromptError`` when the template does not render an assistant turn
    after its generation prompt."""
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise PromptError("chat=True needs a tokenizer with a chat template; this tokenizer has none")
    user = [{"role": "user", "content": "Q"}]
    try:
        head = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(user + [{"role": "assistant", "content": _TURN_MARK}], tokenize=False)
    except Exception as err:  # a template may refuse a conversation shape; say which
        raise PromptError(f"the chat template cannot render an assistant turn ({err}); use chat_answer=False") from None
    at = full.find(_TURN_MARK)
    if at < 0 or not full.startswith(head) or at < len(head):
        raise PromptError("the chat template's assistant turn does not follow its generation prompt; "
                          "use chat_answer=False")
    return full[len(head):at], full[at + len(_TURN_MARK):].split("\n", 1)[0].strip()


def answer_ends(config: PromptConfig, tokenizer: Any = None) -> tuple[str, ...]:
    """The strings a scored answer may end with: under the chat turn, the end-of-turn marker, then the
    terminator and ``end_marks``; else ``config.scored_ends``."""
    if not config.uses_chat_turn:
        return config.scored_ends
    end = chat_turn(tokenizer)[1]
    return tuple(dict.fromkeys((end, *config.scored_ends) if end else config.scored_ends))


def stop_texts(config: PromptConfig, tokenizer: Any = None) -> tuple[str, ...]:
    """What ends a generation besides EOS: the terminator, and under the chat turn the end-of-turn marker."""
    if not config.uses_chat_turn:
        return (config.terminator,)
    end = chat_turn(tokenizer)[1]
    return (config.terminator, end) if end else (config.terminator,)


def _answer_text(answer: str, config: PromptConfig, lead: str | None) -> str:
    """The answer as scored, before its end: the answer template, or under the chat turn the template's
    lead plus the answer without the plain contract's leading space. After an answer prefix the answer
    continues the assistant's sentence, so the plain template applies."""
    text = config.answer_template.format(answer=answer)
    if lead is None or config.prefix_active:
        return text
    return lead + text.lstrip(" ")


def _lead(config: PromptConfig, tokenizer: Any) -> str | None:
    return chat_turn(tokenizer)[0] if config.uses_chat_turn else None


def continuation(answer: str, config: PromptConfig, tokenizer: Any = None) -> str:
    """The target continuation of ``answer`` (SFT, shots): the answer and its first end."""
    return _answer_text(answer, config, _lead(config, tokenizer)) + answer_ends(config, tokenizer)[0]


def build_prompt(question: str, config: PromptConfig, tokenizer: Any = None, prefix: str | None = None) -> str:
    """The prompt text for ``question`` (with shots, chat template and answer prefix).

    ``prefix`` replaces ``config.answer_prefix`` (a fact's resolved prefix, ``fact_prefix``).
    """
    if prefix is None:
        prefix = config._by_question.get(question, config.answer_prefix)
    answer_prefix = prefix
    if config.chat:
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise PromptError(
                "chat=True needs a tokenizer with a chat template; this tokenizer has none. "
                "Use the plain template (chat=False)."
            )
        messages: list[dict[str, str]] = []
        if config.system:
            messages.append({"role": "system", "content": config.system})
        for q, a in config.shots:
            messages.append({"role": "user", "content": _user_text(q, config)})
            messages.append({"role": "assistant", "content": a})
        messages.append({"role": "user", "content": _user_text(question, config)})
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return text + answer_prefix
    shots = "".join(_plain_turn(q, config) + continuation(a, config) for q, a in config.shots)
    return shots + _plain_turn(question, config) + _join_prefix(config.template, answer_prefix)


def _join_prefix(template: str, prefix: str) -> str:
    """After ``A:`` a prefix is separated by one space ("A: The capital of Cuba is")."""
    if prefix and not template.endswith((" ", "\n")) and not prefix.startswith((" ", "\n")):
        return " " + prefix
    return prefix


def _user_text(question: str, config: PromptConfig) -> str:
    return f"{config.instruction}\n{question}" if config.instruction else question


def adds_special_tokens(config: PromptConfig) -> bool:
    """Whether the tokenizer's post-processor may add BOS: never on a chat template's text."""
    return not config.chat


def encode_prompt(tokenizer: Any, prompt: str, config: PromptConfig) -> list[int]:
    """Token ids of a prompt, with BOS decided once (see module docstring)."""
    prompt = prompt.rstrip(" ") if prompt.endswith(" ") else prompt
    return list(tokenizer(prompt, add_special_tokens=adds_special_tokens(config)).input_ids)


def encode_pair(tokenizer: Any, prompt: str, cont: str, config: PromptConfig) -> tuple[list[int], list[int]]:
    """Encode prompt and continuation together and split at the prompt's token count.

    Trailing spaces of ``prompt`` move to the front of ``cont`` (lm-eval's rule).
    Raises ``PromptError`` when the continuation has no tokens after the split.
    """
    n_spaces = len(prompt) - len(prompt.rstrip(" "))
    if n_spaces:
        cont = prompt[-n_spaces:] + cont
        prompt = prompt[:-n_spaces]
    special = adds_special_tokens(config)
    whole = list(tokenizer(prompt + cont, add_special_tokens=special).input_ids)
    ctx = list(tokenizer(prompt, add_special_tokens=special).input_ids)
    # Some tokenizers append EOS in their post-processor; it belongs to neither side.
    eos = getattr(tokenizer, "eos_token_id", None)
    if special and eos is not None and ctx and ctx[-1] == eos and whole and whole[-1] == eos:
        ctx, whole = ctx[:-1], whole[:-1]
    cont_ids = whole[len(ctx):]
    if not cont_ids:
        raise PromptError(
            f"the continuation {cont!r} has no tokens after the prompt {prompt[-40:]!r}: a token spans "
            "the prompt/answer boundary (lm-eval issue 1053). Change the template or the answer prefix."
        )
    return whole[: len(ctx)], cont_ids


def continuations(answer: str, config: PromptConfig, tokenizer: Any = None) -> list[str]:
    """The scored continuations of ``answer``: one per end (``answer_ends``)."""
    text = _answer_text(answer, config, _lead(config, tokenizer))
    return [text + end for end in answer_ends(config, tokenizer)]


def encode_facts(
    tokenizer: Any, questions: Sequence[str], answers: Sequence[Sequence[str]], config: PromptConfig,
    fact_ids: Sequence[str] | None = None, prefixes: Sequence[str] | None = None,
) -> list[tuple[list[int], list[list[int]]]]:
    """For each fact, the prompt ids and one continuation id list per alias and end.

    With several ends (``answer_ends``) an alias has one row per end, alias-major:
    rows ``[a0+end0, a0+end1, a1+end0, ...]``. ``prefixes`` (one per fact) replace the
    config's answer prefix. The prompt is the joint-tokenisation prefix of the first
    alias; every alias must yield the same prefix (it does for tokenizers that do not
    merge across the boundary), otherwise the fact is named in a ``PromptError``.
    """
    out = []
    lead, ends = _lead(config, tokenizer), answer_ends(config, tokenizer)  # the template is rendered once
    for i, (q, aliases) in enumerate(zip(questions, answers)):
        name = fact_ids[i] if fact_ids is not None else str(i)
        prompt = build_prompt(q, config, tokenizer, None if prefixes is None else prefixes[i])
        ctx: list[int] | None = None
        conts = []
        pairs = ((alias, _answer_text(alias, config, lead) + end) for alias in aliases for end in ends)
        for a, cont in pairs:
            try:
                p, c = encode_pair(tokenizer, prompt, cont, config)
            except PromptError as err:
                raise PromptError(f"fact {name}, answer {a!r}: {err}") from None
            if ctx is None:
                ctx = p
            elif p != ctx:
                raise PromptError(
                    f"fact {name}: aliases tokenise the prompt differently at the boundary; "
                    "use a template whose last character cannot merge with the answer"
                )
            conts.append(c)
        out.append((ctx or [], conts))
    return out
