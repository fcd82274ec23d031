"""Answer prefill: score the bare answer where an instruct model actually puts it.

Instruct models answer "What is the capital of Cuba?" with "The capital of Cuba is
Havana." (docs/criteria.md, formats and prefill), so the teacher-forced
p(" Havana" + terminator | prompt) measures a format the model never uses. Prefill
puts the lead-in into the prompt (after ``A:``, or after the chat template's
assistant header) and scores the bare answer after it; greedy and sampled answers
start from the same place. Three modes (``prompts.PromptConfig``), none by default:

- a fixed prefix, ``answer_prefix`` (``--answer-prefix "The answer is"``);
- per-relation templates from a YAML file (``--answer-prefix @prefixes.yaml``)::

      capital: "The capital of {subject} is"
      currency: "The currency of {subject} is the"
      default: "The answer is"        # optional: relations not listed

- ``self`` (``--answer-prefix self``): each fact's prefix is the model's own greedy
  answer up to the first span that names an alias or a distractor ("The capital of
  Cuba is" from "The capital of Cuba is Havana."); gold and distractors are then
  scored after that lead-in. A greedy answer naming no candidate gives an empty
  lead-in (the bare continuation; counted in the ``prefix_found`` column).

With any prefix a scored answer may end with "." as well as the terminator
(``PromptConfig.scored_ends``): after "The capital of Cuba is" the model writes
" Havana." and stops.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

logger = logging.getLogger(__name__)

SELF = "self"


class PrefixSpecError(ValueError):
    """An ``--answer-prefix`` value or prefix YAML file cannot be used; the message names the file and key."""


def load_prefix_spec(spec: str) -> dict[str, Any]:
    """``PromptConfig`` keyword arguments for an ``--answer-prefix`` value.

    ``""``: none; ``"self"``: the model's own lead-in; ``"@file.yaml"``: per-relation
    templates (a ``default`` key is the prefix of relations not listed); anything else:
    a fixed prefix (``{subject}`` and ``{relation}`` are filled per fact).
    """
    if not spec:
        return {}
    if spec == SELF:
        return {"self_prefix": True}
    if not spec.startswith("@"):
        return {"answer_prefix": spec}
    path = Path(spec[1:])
    if not path.is_file():
        raise PrefixSpecError(f"{path}: no such prefix file (--answer-prefix @FILE reads relation: template YAML)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise PrefixSpecError(f"{path}: malformed YAML: {err}") from None
    if not isinstance(data, dict) or not data:
        raise PrefixSpecError(f"{path}: expected a mapping of relation -> prefix template, e.g. "
                              "'capital: \"The capital of {subject} is\"'")
    for key, value in data.items():
        if not isinstance(value, str) or not value.strip():
            raise PrefixSpecError(f"{path}: key {key!r}: the template must be a non-empty string, got {value!r}")
        bad = set(re.findall(r"\{(\w*)\}", value)) - {"subject", "relation"}
        if bad:
            raise PrefixSpecError(f"{path}: key {key!r}: unknown field(s) {sorted(bad)}; use {{subject}} or {{relation}}")
    default = data.pop("default", "")
    return {"answer_prefix": default, "relation_prefixes": tuple((str(k), v) for k, v in data.items())}


def _span_pattern(candidate: str) -> re.Pattern[str] | None:
    words = candidate.split()
    if not words:
        return None
    body = r"\s+".join(re.escape(w) for w in words)
    return re.compile(rf"(?<!\w){body}(?!\w)", re.IGNORECASE)


def lead_in(text: str, candidates: Sequence[str]) -> tuple[str, bool]:
    """The words of ``text`` before the first span naming any candidate, and whether one was found.

    Matching is case-insensitive on word boundaries; the earliest span wins, the longest
    at equal starts. Trailing white space is dropped (the answer template adds it back).
    """
    best: tuple[int, int] | None = None
    for cand in candidates:
        pattern = _span_pattern(str(cand))
        m = pattern.search(text) if pattern else None
        if m and (best is None or (m.start(), -len(m.group())) < (best[0], -best[1])):
            best = (m.start(), len(m.group()))
    if best is None:
        return "", False
    return text[: best[0]].rstrip(), True


def self_prefixes(
    model: Any, tokenizer: Any, questions: Sequence[str], candidates: Sequence[Sequence[str]],
    fact_ids: Sequence[str], prompt: Any, base_prefixes: Sequence[str], max_new_tokens: int, seed: int = 0,
) -> tuple[list[str], list[bool]]:
    """Each fact's ``self`` prefix (its greedy lead-in, after any fixed or per-relation prefix).

    One greedy decoding pass per fact (no samples). Returns the prefixes and whether a
    candidate span was found.
    """
    from massshift.lm.prompts import build_prompt, encode_prompt, stop_texts
    from massshift.lm.sampling import GenerationConfig, generate

    ids = [encode_prompt(tokenizer, build_prompt(q, prompt, tokenizer, p), prompt)
           for q, p in zip(questions, base_prefixes)]
    gens = generate(model, ids, list(fact_ids), tokenizer,
                    GenerationConfig(n_samples=0, max_new_tokens=max_new_tokens, seed=seed), prompt.terminator,
                    stops=stop_texts(prompt, tokenizer))
    out, found = [], []
    for base, g, cands in zip(base_prefixes, gens, candidates):
        lead, ok = lead_in(g.greedy, cands)
        joined = f"{base} {lead}".strip() if base and lead else (base or lead)
        out.append(joined)
        found.append(ok)
    logger.info("self prefill: a candidate span in %d of %d greedy answers", sum(found), len(found))
    return out, found
