"""Facts files: load the QA datasets massshift studies into one canonical table.

A fact is one question with one or more accepted answers (aliases), a stable id
and optional subject / relation / object / popularity (see DESIGN.md). Every
loader returns a DataFrame with exactly these columns, in this order:

============  ==============  =====================================================
column        dtype           meaning
============  ==============  =====================================================
fact_id       str             the file's id (``fact_id`` or ``id``), else ``make_fact_id``
question      str             the question, stripped, non-empty
answers       list[str]       aliases, stripped, de-duplicated in order, non-empty
subject       str or None     the triple's subject (PopQA ``subj``)
relation      str or None     the triple's relation (PopQA ``prop``)
object        str or None     the triple's object (PopQA ``obj``)
popularity    float or NaN    subject popularity (PopQA ``s_pop``)
============  ==============  =====================================================

Files: ``.jsonl``, ``.json`` (a list of objects or ``{"data": [...]}``),
``.csv`` and ``.parquet``. Schema presets map the public datasets' fields:

- ``canonical``: question, answers (list) or answer (one string), optional
  fact_id/id, subject, relation, object, popularity;
- ``popqa``: question, possible_answers (a JSON string), subj, prop, obj, s_pop, id;
- ``entityquestions``: question, answers;
- ``triviaqa``: question, answer.value + answer.aliases (nested dict or flattened
  columns), question_id;
- ``nq_open``: question, answer (a list);
- ``simpleqa``: problem, answer (a string).

Any bad row raises ``FactsError`` naming the file, the line (jsonl) or row
(json/csv/parquet, 1-based, header not counted) and the field; no partial table
is ever returned. ``skip_invalid=True`` drops bad rows instead and lists their
errors in ``df.attrs["skipped"]``.
"""

from __future__ import annotations

import ast
import codecs
import csv
import hashlib
import io
import json
import logging
import math
import numbers
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from massshift.data.matching import normalize
from massshift.rundir import write_text

logger = logging.getLogger(__name__)

FACT_COLUMNS: tuple[str, ...] = (
    "fact_id", "question", "answers", "subject", "relation", "object", "popularity",
)
PRESETS: tuple[str, ...] = ("canonical", "popqa", "entityquestions", "triviaqa", "nq_open", "simpleqa")
SUFFIXES: tuple[str, ...] = (".jsonl", ".json", ".csv", ".parquet")

# preset -> (question field, id fields, subject, relation, object, popularity field)
_FIELDS: dict[str, tuple[str, tuple[str, ...], str | None, str | None, str | None, str | None]] = {
    "canonical": ("question", ("fact_id", "id"), "subject", "relation", "object", "popularity"),
    "popqa": ("question", ("id",), "subj", "prop", "obj", "s_pop"),
    "entityquestions": ("question", (), None, None, None, None),
    "triviaqa": ("question", ("question_id",), None, None, None, None),
    "nq_open": ("question", (), None, None, None, None),
    "simpleqa": ("problem", (), None, None, None, None),
}
_DTYPES = {"answers": object, "subject": object, "relation": object, "object": object, "popularity": float}
_CANONICAL_ONLY = ("fact_id", "id", "subject", "relation", "object", "popularity")


class FactsError(ValueError):
    """A facts file cannot be used; the message names the file, the line or row, and the field."""


class _RowError(Exception):
    """One bad row; ``_build`` turns it into a ``FactsError`` or a skipped-row message."""

    def __init__(self, field: str, reason: str, number: int = 0) -> None:
        super().__init__(reason)
        self.field, self.reason, self.number = field, reason, number

    def message(self, source: str, unit: str) -> str:
        return f"{source}: {unit} {self.number}: field {self.field!r}: {self.reason}"


def make_fact_id(question: str, answers: Iterable[str]) -> str:
    """A stable id: the first 16 hex digits of sha256 over the normalised question and sorted answers.

    Case, punctuation, articles and the order of the aliases do not change it.
    """
    key = normalize(question) + "\x1f" + "\x1e".join(sorted(normalize(a) for a in answers))
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


def detect_schema(records: list[Mapping[str, Any]]) -> str | None:
    """The preset whose fields ``records`` carry, or None: popqa (possible_answers), simpleqa
    (problem), triviaqa (answer a dict, or answer.value/aliases columns), canonical (answers plus
    any canonical-only field) before entityquestions, nq_open (answer a list) before canonical."""
    columns = _columns(records)
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


def facts_from_records(
    records: Iterable[Mapping[str, Any]], schema: str = "auto", skip_invalid: bool = False,
    source: str = "<records>",
) -> pd.DataFrame:
    """The canonical facts table from in-memory records (same rules as ``load_facts``; rows are 1-based)."""
    return _build(list(enumerate(records, start=1)), [], schema, skip_invalid, source, "row")


def load_facts(path: str | os.PathLike[str], schema: str = "auto", skip_invalid: bool = False) -> pd.DataFrame:
    """Load a facts file (.jsonl, .json, .csv, .parquet) into the canonical table.

    Args:
        path: the file.
        schema: a name from ``PRESETS``, or ``auto`` to detect it (the choice is logged).
        skip_invalid: drop bad rows instead of raising; their messages go to
            ``df.attrs["skipped"]`` and a warning gives the count. File-level
            problems (missing or empty file, unknown extension, no valid row) still raise.

    Raises:
        FactsError: naming the file, the line (jsonl) or row (others), and the field.
    """
    path = Path(path)
    items, errors, unit = _read_records(path)
    return _build(items, errors, schema, skip_invalid, str(path), unit)


def save_facts(df: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write the canonical columns of ``df`` as .jsonl, atomically; ``load_facts`` reads it back."""
    path = Path(path)
    if path.suffix.lower() != ".jsonl":
        raise FactsError(f"{path}: save_facts writes .jsonl; give a path ending in .jsonl")
    missing = [c for c in ("fact_id", "question", "answers") if c not in df.columns]
    if missing:
        raise FactsError(f"{path}: the table to save lacks column(s) {', '.join(missing)}")
    lines = []
    for rec in df.to_dict("records"):
        out = {c: None if c != "answers" and _missing(rec.get(c)) else rec.get(c) for c in FACT_COLUMNS}
        out["answers"] = [str(a) for a in out["answers"]]
        if out["popularity"] is not None:
            out["popularity"] = float(out["popularity"])
        lines.append(json.dumps(out, ensure_ascii=False))
    write_text(path, "".join(line + "\n" for line in lines))
    logger.info("wrote %d facts to %s", len(lines), path)
    return path


# --- reading files ---------------------------------------------------------------------------


def _read_records(path: Path) -> tuple[list[tuple[int, Any]], list[_RowError], str]:
    """(number, record) pairs, per-line errors found while parsing, and the unit ("line" or "row")."""
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise FactsError(f"{path}: unsupported extension {path.suffix!r}; use one of {', '.join(SUFFIXES)}")
    if not path.is_file():
        raise FactsError(f"{path}: no such file")
    data = path.read_bytes()
    if not data.strip():
        raise FactsError(f"{path}: the file is empty")
    if suffix == ".parquet":
        try:
            table = pd.read_parquet(io.BytesIO(data))
        except (OSError, ValueError, ImportError) as err:
            raise FactsError(f"{path}: cannot read parquet: {err}") from None
        return list(enumerate(table.to_dict("records"), start=1)), [], "row"
    if suffix == ".jsonl":
        return (*_read_jsonl(data), "line")
    text = _decode(path, data)
    if suffix == ".csv":
        items: list[tuple[int, Any]] = []
        errors: list[_RowError] = []
        try:
            for number, rec in enumerate(csv.DictReader(io.StringIO(text, newline="")), start=1):
                if None in rec:
                    errors.append(_RowError("(csv)", "more cells than the header has columns", number))
                else:
                    items.append((number, rec))
        except csv.Error as err:
            raise FactsError(f"{path}: malformed CSV: {err}") from None
        return items, errors, "row"
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as err:
        raise FactsError(f"{path}: line {err.lineno}: malformed JSON: {err.msg}") from None
    if isinstance(obj, Mapping) and isinstance(obj.get("data"), list):
        obj = obj["data"]
    if not isinstance(obj, list):
        raise FactsError(f'{path}: expected a list of objects or {{"data": [...]}}, got {type(obj).__name__}')
    return list(enumerate(obj, start=1)), [], "row"


def _read_jsonl(data: bytes) -> tuple[list[tuple[int, Any]], list[_RowError]]:
    items: list[tuple[int, Any]] = []
    errors: list[_RowError] = []
    for number, raw in enumerate(data.removeprefix(codecs.BOM_UTF8).split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            items.append((number, json.loads(raw.decode("utf-8"))))
        except UnicodeDecodeError as err:
            errors.append(_RowError("(encoding)", f"invalid UTF-8 at byte {err.start}; save as UTF-8", number))
        except json.JSONDecodeError as err:
            errors.append(_RowError("(json)", f"malformed JSON at column {err.colno}: {err.msg}", number))
    return items, errors


def _decode(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise FactsError(f"{path}: line {line}: invalid UTF-8 (byte {err.start}); save as UTF-8") from None


# --- building the table ----------------------------------------------------------------------


def _build(
    items: list[tuple[int, Any]], errors: list[_RowError], schema: str, skip_invalid: bool,
    source: str, unit: str,
) -> pd.DataFrame:
    if schema != "auto" and schema not in PRESETS:
        raise FactsError(f"{source}: unknown schema {schema!r}; use 'auto' or one of {', '.join(PRESETS)}")
    if not items and not errors:
        raise FactsError(f"{source}: no facts (the file holds no records, or only a header)")
    records = [r for _, r in items if isinstance(r, Mapping)]
    if schema == "auto" and records:
        detected = detect_schema(records)
        if detected is None:
            raise FactsError(
                f"{source}: cannot tell the schema from columns {sorted(_columns(records))}; "
                f"known presets: {', '.join(PRESETS)} (pass schema= to choose one)"
            )
        logger.info("%s: detected schema %r", source, detected)
        schema = detected
    rows: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for number, rec in items:
        try:
            row = _canonical_row(rec, schema)
            if row["fact_id"] in seen:
                raise _RowError("fact_id", f"duplicate fact_id {row['fact_id']!r}, also at {unit} "
                                f"{seen[row['fact_id']]} (same question and answers when no id is given)")
        except _RowError as err:
            err.number = number
            errors.append(err)
            continue
        seen[row["fact_id"]] = number
        rows.append(row)
    messages = [e.message(source, unit) for e in sorted(errors, key=lambda e: e.number)]
    if messages and not skip_invalid:
        more = f" (and {len(messages) - 1} more bad {unit}s)" if len(messages) > 1 else ""
        raise FactsError(messages[0] + more)
    if not rows:
        raise FactsError(f"{source}: no valid facts; {len(messages)} bad {unit}s, the first: {messages[0]}")
    if messages:
        logger.warning("%s: skipped %d invalid %ss (see df.attrs['skipped'])", source, len(messages), unit)
    # object dtype keeps None in the optional text columns (pandas 3's str dtype would make it NaN)
    df = pd.DataFrame({c: pd.Series([r[c] for r in rows], dtype=_DTYPES.get(c)) for c in FACT_COLUMNS})
    df.attrs["skipped"] = messages
    df.attrs["schema"] = schema
    return df


def _canonical_row(rec: Any, schema: str) -> dict[str, Any]:
    if not isinstance(rec, Mapping):
        raise _RowError("(record)", f"expected an object with named fields, got {type(rec).__name__}")
    q_field, id_fields, s_field, r_field, o_field, pop_field = _FIELDS[schema]
    question = _text(rec, q_field, required=True)
    answers = _answers(rec, schema)
    fact_id = next((i for i in (_id(rec, f) for f in id_fields) if i is not None), None)
    return {
        "fact_id": fact_id if fact_id is not None else make_fact_id(question, answers),
        "question": question,
        "answers": answers,
        "subject": _text(rec, s_field) if s_field else None,
        "relation": _text(rec, r_field) if r_field else None,
        "object": _text(rec, o_field) if o_field else None,
        "popularity": _popularity(rec, pop_field) if pop_field else math.nan,
    }


def _answers(rec: Mapping[str, Any], schema: str) -> list[str]:
    if schema == "triviaqa":
        nested = rec.get("answer")
        nested = nested if isinstance(nested, Mapping) else {}
        value = nested.get("value", rec.get("answer.value"))
        aliases = nested.get("aliases", rec.get("answer.aliases"))
        if _missing(value) and _missing(aliases):
            raise _RowError("answer.value", "missing or empty; TriviaQA rows need answer.value or aliases")
        raw = [] if _missing(value) else _alias_list(value, "answer.value", single=True)
        raw += [] if _missing(aliases) else _alias_list(aliases, "answer.aliases", single=False)
        field = "answer.value"
    else:
        field = {"popqa": "possible_answers", "entityquestions": "answers"}.get(schema, "answer")
        if schema == "canonical" and ("answers" in rec or "answer" not in rec):
            field = "answers"
        raw = _alias_list(rec.get(field), field, single=schema in ("canonical", "simpleqa"))
    answers = list(dict.fromkeys(a.strip() for a in raw if a.strip()))
    if not answers:
        raise _RowError(field, "holds no non-empty answer; give at least one answer string")
    return answers


def _alias_list(value: Any, field: str, single: bool) -> list[str]:
    if _missing(value):
        raise _RowError(field, "missing or empty; give at least one answer string")
    parsed = _as_list(value)
    if parsed is None:
        if isinstance(value, str) and single:
            return [value]
        raise _RowError(field, f"must be a list of strings, got {type(value).__name__} {_short(value)}")
    bad = [a for a in parsed if not isinstance(a, str)]
    if bad:
        raise _RowError(field, f"must hold only strings, got {type(bad[0]).__name__} {_short(bad[0])}")
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


def _text(rec: Mapping[str, Any], field: str, required: bool = False) -> str | None:
    value = rec.get(field)
    if _missing(value):
        if required:
            raise _RowError(field, "missing or empty; every fact needs one")
        return None
    if not isinstance(value, str):
        raise _RowError(field, f"must be a string, got {type(value).__name__} {_short(value)}")
    return value.strip()


def _id(rec: Mapping[str, Any], field: str) -> str | None:
    value = rec.get(field)
    if _missing(value):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, (str, numbers.Integral)):
        raise _RowError(field, f"must be a string or an integer, got {type(value).__name__} {_short(value)}")
    return str(value).strip()


def _popularity(rec: Mapping[str, Any], field: str) -> float:
    value = rec.get(field)
    if _missing(value):
        return math.nan
    try:
        if isinstance(value, bool):  # True is an int to Python, not a popularity
            raise TypeError
        return float(value)
    except (TypeError, ValueError):
        raise _RowError(field, f"must be a number, got {type(value).__name__} {_short(value)}") from None


def _missing(value: Any) -> bool:
    if value is None or value is pd.NA or isinstance(value, str) and not value.strip():
        return True
    return isinstance(value, float) and math.isnan(value)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _columns(records: list[Mapping[str, Any]]) -> set[str]:
    return {str(k) for rec in records for k in rec}  # the union: jsonl rows may differ in keys


def _first_present(records: list[Mapping[str, Any]], field: str) -> Any:
    return next((r[field] for r in records if not _missing(r.get(field))), None)
