"""Schema presets: which fields of each public QA dataset hold the question, the answers and the triple.

- ``canonical``: question, answers (list) or answer (one string), optional
  fact_id/id, subject, relation, object, popularity;
- ``popqa``: question, possible_answers (a JSON string), subj, prop, obj, s_pop, id;
- ``entityquestions``: question, answers;
- ``triviaqa``: question, answer.value + answer.aliases (nested dict or flattened
  columns), question_id;
- ``nq_open``: question, answer (a list);
- ``simpleqa``: problem, answer (a string).

``detect_schema`` picks a preset from the fields records carry; the field readers raise ``RowError``
naming the field and what is wrong, which ``massshift.data.facts`` turns into a ``FactsError``.
"""

from __future__ import annotations

import ast
import json
import math
import numbers
from collections.abc import Mapping
from typing import Any

import pandas as pd

PRESETS: tuple[str, ...] = ("canonical", "popqa", "entityquestions", "triviaqa", "nq_open", "simpleqa")

# preset -> (question field, id fields, subject, relation, object, popularity field)
FIELDS: dict[str, tuple[str, tuple[str, ...], str | None, str | None, str | None, str | None]] = {
    "canonical": ("question", ("fact_id", "id"), "subject", "relation", "object", "popularity"),
    "popqa": ("question", ("id",), "subj", "prop", "obj", "s_pop"),
    "entityquestions": ("question", (), None, None, None, None),
    "triviaqa": ("question", ("question_id",), None, None, None, None),
    "nq_open": ("question", (), None, None, None, None),
    "simpleqa": ("problem", (), None, None, None, None),
}
_CANONICAL_ONLY = ("fact_id", "id", "subject", "relation", "object", "popularity")


class RowError(Exception):
    """One bad row; ``massshift.data.facts`` turns it into a ``FactsError`` or a skipped-row message."""

    def __init__(self, field: str, reason: str, number: int = 0) -> None:
        super().__init__(reason)
        self.field, self.reason, self.number = field, reason, number

    def message(self, source: str, unit: str) -> str:
        return f"{source}: {unit} {self.number}: field {self.field!r}: {self.reason}"


def detect_schema(records: list[Mapping[str, Any]]) -> str | None:
    """The preset whose fields ``records`` carry, or None: popqa (possible_answers), simpleqa
    (problem), triviaqa (answer a dict, or answer.value/aliases columns), canonical (answers plus
    any canonical-only field) before entityquestions, nq_open (answer a list) before canonical."""
    columns = columns_of(records)
    first_answer = _first_present(records, "answer")
    if "possible_answers" in columns:
        return "popqa"
    if "problem" in columns:
        return "simpleqa"
    if "answer.value" in columns or "answer.aliases" in columns or isinstance(first_answer, Mapping):
        return "triviaqa"
    if "answers" in columns:
        return "canonical" if any(c in columns for c in _CANONICAL_ONLY) else "entityquestions"
    if "answer" in columns:
        return "nq_open" if _as_list(first_answer) is not None else "canonical"
    return None


def answers_of(rec: Mapping[str, Any], schema: str) -> list[str]:
    if schema == "triviaqa":
        nested = rec.get("answer")
        nested = nested if isinstance(nested, Mapping) else {}
        value = nested.get("value", rec.get("answer.value"))
        aliases = nested.get("aliases", rec.get("answer.aliases"))
        if is_missing(value) and is_missing(aliases):
            raise RowError("answer.value", "missing or empty; TriviaQA rows need answer.value or aliases")
        raw = [] if is_missing(value) else _alias_list(value, "answer.value", single=True)
        raw += [] if is_missing(aliases) else _alias_list(aliases, "answer.aliases", single=False)
        field = "answer.value"
    else:
        field = {"popqa": "possible_answers", "entityquestions": "answers"}.get(schema, "answer")
        if schema == "canonical" and ("answers" in rec or "answer" not in rec):
            field = "answers"
        raw = _alias_list(rec.get(field), field, single=schema in ("canonical", "simpleqa"))
    answers = list(dict.fromkeys(a.strip() for a in raw if a.strip()))
    if not answers:
        raise RowError(field, "holds no non-empty answer; give at least one answer string")
    return answers


def _alias_list(value: Any, field: str, single: bool) -> list[str]:
    if is_missing(value):
        raise RowError(field, "missing or empty; give at least one answer string")
    parsed = _as_list(value)
    if parsed is None:
        if isinstance(value, str) and single:
            return [value]
        raise RowError(field, f"must be a list of strings, got {type(value).__name__} {_short(value)}")
    bad = [a for a in parsed if not isinstance(a, str)]
    if bad:
        raise RowError(field, f"must hold only strings, got {type(bad[0]).__name__} {_short(bad[0])}")
    return parsed


def _as_list(value: Any) -> list[Any] | None:
    """A list from a list, tuple, numpy array, or a string holding a JSON or Python list; else None."""
    if isinstance(value, (list, tuple)):
        return list(value)
    if hasattr(value, "tolist") and hasattr(value, "ndim") and value.ndim == 1:
        return list(value.tolist())
    if isinstance(value, str) and value.lstrip().startswith("["):
        for parse in (json.loads, ast.literal_eval):
            try:
                out = parse(value)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                continue
            return out if isinstance(out, list) else None
    return None


def text_field(rec: Mapping[str, Any], field: str, required: bool = False) -> str | None:
    value = rec.get(field)
    if is_missing(value):
        if required:
            raise RowError(field, "missing or empty; every fact needs one")
        return None
    if not isinstance(value, str):
        raise RowError(field, f"must be a string, got {type(value).__name__} {_short(value)}")
    return value.strip()


def id_field(rec: Mapping[str, Any], field: str) -> str | None:
    value = rec.get(field)
    if is_missing(value):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, (str, numbers.Integral)):
        raise RowError(field, f"must be a string or an integer, got {type(value).__name__} {_short(value)}")
    return str(value).strip()


def popularity_field(rec: Mapping[str, Any], field: str) -> float:
    value = rec.get(field)
    if is_missing(value):
        return math.nan
    try:
        if isinstance(value, bool):  # True is an int to Python, not a popularity
            raise TypeError
        return float(value)
    except (TypeError, ValueError):
        raise RowError(field, f"must be a number, got {type(value).__name__} {_short(value)}") from None


def is_missing(value: Any) -> bool:
    if value is None or value is pd.NA or isinstance(value, str) and not value.strip():
        return True
    return isinstance(value, float) and math.isnan(value)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def columns_of(records: list[Mapping[str, Any]]) -> set[str]:
    return {str(k) for rec in records for k in rec}  # the union: jsonl rows may differ in keys


def _first_present(records: list[Mapping[str, Any]], field: str) -> Any:
    return next((r[field] for r in records if not is_missing(r.get(field))), None)
