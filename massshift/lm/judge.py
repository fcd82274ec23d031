"""A language model as judge: it grades the answers the string matcher rejects.

``Judge(model, tokenizer, key, match)`` is a matcher (``(prediction, answers) -> bool``, the interface of
``massshift.data.matching``): an answer the string matcher (``exact`` or ``contains``) accepts stays
correct; an answer it rejects (a paraphrase, a too-long sentence, another spelling) is put to the judge
model with the fixed prompt ``JUDGE_PROMPT`` (through the judge's chat template when its tokenizer has
one) and counted correct when the judge's next token is more likely ``Yes`` than ``No``: the margin is
log p(Yes) - log p(No), each summed over the single-token spellings of ``Yes``/``yes``/``YES`` with and
without a leading space. Empty answers are never judged.

The judge sees the gold answers and the answer, not the question (the matcher interface carries no
question). Verdicts are cached by (gold answers, answer, judge fingerprint) in memory and, with
``cache_dir``, on disk (``judge/<fingerprint>.json``); the fingerprint covers the judge's weights and
vocabulary, the prompt and the matcher's settings, and is the judge's ``__qualname__``, which the score
cache keys its chunks by. ``summary()`` gives the counts a report needs: answers graded, verdicts the
judge changed, agreement with ``exact`` and ``contains``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from massshift.data.matching import MatchConfig, is_correct, names_other, normalize
from massshift.rundir import write_text

logger = logging.getLogger(__name__)

JUDGE_PROMPT = (
    "You check answers to quiz questions.\n"
    "Correct answer: {gold}\n"
    "Given answer: {prediction}\n"
    "Does the given answer state the correct answer (the same thing, possibly in other words or spelling)? "
    "Reply with Yes or No."
)
"""The fixed judge prompt; ``{gold}`` is the aliases joined by " / "."""
PLAIN_SUFFIX = "\nReply:"
"""After the prompt when the judge's tokenizer has no chat template."""
_YES, _NO = ("Yes", "yes", "YES"), ("No", "no", "NO")


class Judge:
    """A judge model wrapped as a matcher; see the module docstring."""

    def __init__(self, model: Any, tokenizer: Any, key: str, match: MatchConfig | None = None,
                 cache_dir: str | os.PathLike[str] | None = None) -> None:
        self.model, self.tokenizer = model.eval(), tokenizer
        self.match = match or MatchConfig()
        self.chat = bool(getattr(tokenizer, "chat_template", None))
        spec = json.dumps([key, JUDGE_PROMPT, PLAIN_SUFFIX, self.chat, self.match.mode, self.match.max_words])
        self.fingerprint = hashlib.sha256(spec.encode()).hexdigest()[:16]
        self.__qualname__ = f"Judge[{self.fingerprint}]"  # what the score cache keys chunks by
        yes, no = _first_ids(tokenizer, _YES), _first_ids(tokenizer, _NO)
        self.yes, self.no = yes - no, no - yes  # a first token both share (a bare space) tells nothing
        if not self.yes or not self.no:
            raise ValueError("the judge's tokenizer cannot tell Yes from No by their first tokens; use another judge")
        self.path = Path(cache_dir) / "judge" / f"{self.fingerprint}.json" if cache_dir else None
        self.margins: dict[str, float] = {}
        if self.path is not None and self.path.is_file():
            self.margins = json.loads(self.path.read_text(encoding="utf-8"))
        self.seen: dict[str, dict[str, Any]] = {}  # every distinct (answers, prediction) graded this run

    def prompt(self, prediction: str, answers: Sequence[str]) -> str:
        text = JUDGE_PROMPT.format(gold=" / ".join(answers), prediction=prediction.strip())
        if not self.chat:
            return text + PLAIN_SUFFIX
        return self.tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                  add_generation_prompt=True)

    @torch.no_grad()
    def margin(self, prediction: str, answers: Sequence[str]) -> float:
        """log p(Yes) - log p(No) of the judge's next token after the prompt (cached)."""
        key = json.dumps([list(answers), prediction.strip()], ensure_ascii=False)
        if key not in self.margins:
            ids = self.tokenizer(self.prompt(prediction, answers), return_tensors="pt",
                                 add_special_tokens=not self.chat)["input_ids"].to(self.model.device)
            logp = torch.log_softmax(self.model(ids).logits[0, -1].float(), dim=-1)  # (vocab,)
            yes = torch.logsumexp(logp[sorted(self.yes)], dim=0)
            no = torch.logsumexp(logp[sorted(self.no)], dim=0)
            self.margins[key] = float(yes - no)
        return self.margins[key]

    def __call__(self, prediction: str, answers: Sequence[str]) -> bool:
        by_string = is_correct(prediction, answers, mode=self.match.mode, max_words=self.match.max_words)
        verdict = by_string or (bool(normalize(prediction)) and self.margin(prediction, answers) > 0)
        key = json.dumps([list(answers), prediction.strip()], ensure_ascii=False)
        if key not in self.seen:
            self.seen[key] = {"answers": list(answers), "prediction": prediction.strip(), "string": by_string,
                              "exact": is_correct(prediction, answers, mode="exact"),
                              "contains": is_correct(prediction, answers, mode="contains",
                                                     max_words=self.match.max_words),
                              "judge": verdict}
        return verdict

    def save(self) -> None:
        """Write the verdict cache (when there is a cache folder)."""
        if self.path is not None:
            write_text(self.path, json.dumps(self.margins, ensure_ascii=False))

    def summary(self) -> dict[str, Any]:
        """Distinct (answers, prediction) pairs seen, how many the judge graded and changed, and its
        agreement with ``exact`` and ``contains`` over all of them."""
        rows = list(self.seen.values())
        n = len(rows)
        graded = [r for r in rows if not r["string"] and normalize(r["prediction"])]
        return {
            "fingerprint": self.fingerprint, "prompt": JUDGE_PROMPT, "chat_template": self.chat,
            "match": self.match.mode, "n_answers": n, "n_graded": len(graded),
            "n_changed": sum(r["judge"] != r["string"] for r in rows),
            "agreement_exact": sum(r["judge"] == r["exact"] for r in rows) / n if n else None,
            "agreement_contains": sum(r["judge"] == r["contains"] for r in rows) / n if n else None,
            "changed_examples": [{k: r[k] for k in ("answers", "prediction")} for r in rows
                                 if r["judge"] != r["string"]][:20],
        }


def _first_ids(tokenizer: Any, words: Sequence[str]) -> set[int]:
    """The ids of the words that are one token, with and without a leading space (else their first tokens)."""
    single, first = set(), set()
    for word in words:
        for text in (word, " " + word):
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            if ids:
                (single if len(ids) == 1 else first).add(int(ids[0]))
    return single or first


def judge_reward(judge: Any, values: dict[tuple[str, ...], list[str]] | None = None) -> Any:
    """A training reward (``(text, answers) -> float``) from a judge: 1.0 when ``judge`` accepts the answer
    (its string matcher first, then the judge model), else 0.0. With ``values`` (``matching.relation_values``:
    the other values of each fact's relation) an answer that names one of them earns 0 before the judge is
    asked: the anti-hedging rule of the string reward, so a judge cannot be gamed by listing candidates."""

    def reward(text: str, answers: list[str]) -> float:
        if values and names_other(text, answers, values.get(tuple(answers), [])):
            return 0.0
        return float(judge(text, answers))

    return reward
