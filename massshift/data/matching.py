"""Answer matching: the one definition of "correct" used by scoring, rewards and baselines.

``normalize`` follows the SQuAD evaluation script: lower case, punctuation
removed, the articles a/an/the removed, white space folded. ``is_correct``
compares a prediction with a fact's aliases in one of two modes:

- ``exact`` (the default, and the default for rewards): the normalised
  prediction equals a normalised alias.
- ``contains``: a normalised alias appears as a whole-word span of the
  normalised prediction, as PopQA and EntityQuestions are usually scored. It is
  the mode for models that answer in sentences ("The capital of Alabama is
  Montgomery."). As a reward it can be gamed by listing candidates, so a
  prediction of more than ``max_words`` words (default 12) is wrong, and a
  prediction that also names a distractor (another value of the same
  relation, when the caller passes ``distractors``) is wrong.

Any callable ``(prediction, answers) -> bool`` (a judge model, say) can stand in
for ``is_correct`` wherever massshift takes a ``matcher``.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from massshift.configio import ConfigIO, help_field

MatchMode = Literal["exact", "contains"]
Matcher = Callable[[str, Sequence[str]], bool]

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)
_ASCII_PUNCT_TO_SPACE = str.maketrans({ch: " " for ch in string.punctuation})


def normalize(text: str) -> str:
    """SQuAD-style normalisation: lower case, no punctuation, no articles, single spaces.

    Unicode punctuation (category P*) is removed as well as ASCII punctuation, so
    that "São Tomé." and "são tomé" normalise alike; letters keep their accents.
    """
    if text.isascii():  # fast path, same result: ASCII has no other punctuation
        text = text.lower().translate(_ASCII_PUNCT_TO_SPACE)
        return " ".join(_ARTICLES.sub(" ", text).split())
    text = unicodedata.normalize("NFC", text).lower()
    text = "".join(
        " " if (ch in _PUNCT or unicodedata.category(ch).startswith("P")) else ch for ch in text
    )
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def extract_answer(generation: str, terminator: str = "\n") -> str:
    """The text of a generation up to the terminator (exclusive), stripped."""
    if terminator:
        generation = generation.split(terminator, 1)[0]
    return generation.strip()


def _contains_span(haystack: str, needle: str) -> bool:
    """Whether ``needle`` occurs in ``haystack`` on word boundaries (both normalised)."""
    if not needle:
        return False
    return f" {needle} " in f" {haystack} "


def is_correct(
    prediction: str,
    answers: Sequence[str],
    mode: MatchMode = "exact",
    max_words: int = 12,
    distractors: Sequence[str] = (),
) -> bool:
    """Whether ``prediction`` matches any of ``answers`` under ``mode``.

    Args:
        prediction: the model's answer, already cut at the terminator.
        answers: accepted aliases of the gold answer.
        mode: ``exact`` or ``contains`` (see the module docstring).
        max_words: under ``contains``, predictions longer than this are wrong.
        distractors: under ``contains``, values of the same relation that are not
            gold; a prediction naming any of them is wrong (anti-hedging).
    """
    if mode not in ("exact", "contains"):
        raise ValueError(f"unknown match mode {mode!r}; use 'exact' or 'contains'")
    pred = normalize(prediction)
    if not pred:
        return False
    golds = [g for g in (normalize(a) for a in answers) if g]
    if mode == "exact":
        return pred in golds
    if mode == "contains":
        if len(pred.split()) > max_words:
            return False
        if not any(_contains_span(pred, g) for g in golds):
            return False
        return not _names_other(pred, golds, distractors)
    return False  # unreachable: mode checked above


def names_other(prediction: str, answers: Sequence[str], distractors: Sequence[str]) -> bool:
    """Whether ``prediction`` names, as a whole-word span, one of ``distractors`` that is neither a gold alias
    nor part of one (the anti-hedging test of ``is_correct`` under ``contains``)."""
    return _names_other(normalize(prediction), [g for g in (normalize(a) for a in answers) if g], distractors)


def _names_other(pred: str, golds: Sequence[str], distractors: Sequence[str]) -> bool:
    """``names_other`` on the normalised prediction and gold aliases."""
    gold_set = set(golds)
    for d in distractors:
        nd = normalize(d)
        if nd and nd not in gold_set and not any(_contains_span(g, nd) for g in golds) and _contains_span(pred, nd):
            return True
    return False


def relation_values(facts: Any) -> dict[tuple[str, ...], list[str]]:
    """For each fact's answers, the other values of its relation: the anti-hedging distractors of
    rewards. A value is the fact's ``object`` when the table has that column, else its first alias."""
    objects = facts["object"] if "object" in facts.columns else [list(a)[0] for a in facts["answers"]]
    by_rel: dict[str, list[str]] = {}
    for rel, obj in zip(facts["relation"], objects):
        by_rel.setdefault(rel, [])
        if obj not in by_rel[rel]:
            by_rel[rel].append(obj)
    out = {}
    for rel, answers in zip(facts["relation"], facts["answers"]):
        gold = set(answers)
        out[tuple(answers)] = [v for v in by_rel[rel] if v not in gold]
    return out


def contains_reward(values: dict[tuple[str, ...], list[str]], max_words: int = 12) -> Callable[[str, list[str]], float]:
    """A GRPO reward: 1 when the answer names the gold (``contains``) and no other value of the relation."""

    def reward(text: str, answers: list[str]) -> float:
        return float(is_correct(text, answers, mode="contains", max_words=max_words,
                                distractors=values.get(tuple(answers), ())))

    return reward


@dataclass(frozen=True)
class MatchConfig(ConfigIO):
    """How predictions are judged."""

    mode: MatchMode = help_field("exact", help=(
        "'exact': the normalised prediction equals an alias; 'contains': an alias appears as a whole-word "
        "span (for models that answer in sentences)."))
    max_words: int = help_field(12, help="Under 'contains', a prediction longer than this many words is wrong.")
    terminator: str = help_field("\n", help="Generations are cut at this string before matching.")

    def __post_init__(self) -> None:
        if self.mode not in ("exact", "contains"):
            raise ValueError(f"match mode must be 'exact' or 'contains', got {self.mode!r}; use 'contains' "
                             "for models that answer in sentences")
        if self.max_words < 1:
            raise ValueError(f"max_words must be >= 1 (the default is 12), got {self.max_words}")

    def matcher(self) -> Matcher:
        """A ``(prediction, answers) -> bool`` callable with this config's settings."""

        def match(prediction: str, answers: Sequence[str]) -> bool:
            return is_correct(prediction, answers, mode=self.mode, max_words=self.max_words)

        match.match_config = self  # type: ignore[attr-defined]  (scoring adds each fact's distractors)
        return match
