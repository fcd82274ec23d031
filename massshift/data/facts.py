"""Facts files: load the QA datasets massshift studies into one canonical table.

A fact is one question with one or more accepted answers (aliases), a stable id
and optional subject / relation / object / popularity. Every
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
``.csv`` and ``.parquet``. The public datasets' field names are mapped by the
schema presets of ``massshift.data.presets`` (canonical, popqa,
entityquestions, triviaqa, nq_open, simpleqa), detected or chosen with ``schema=``.

Any bad row raises ``FactsError`` naming the file, the line (jsonl) or row
(json/csv/parquet, 1-based, header not counted) and the field; no partial table
is ever returned. ``skip_invalid=True`` drops bad rows instead and lists their
errors in ``df.attrs["skipped"]``.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import logging
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from massshift.data.matching import normalize
from massshift.data.presets import (  # noqa: F401  (PRESETS and detect_schema are part of this module's API)
    FIELDS,
    PRESETS,
    RowError,
    answers_of,
    columns_of,
    detect_schema,
    id_field,
    is_missing,
    popularity_field,
    text_field,
)
from massshift.rundir import write_text

logger = logging.getLogger(__name__)

FACT_COLUMNS: tuple[str, ...] = (
    "fact_id", "question", "answers", "subject", "relation", "object", "popularity",
)
SUFFIXES: tuple[str, ...] = (".jsonl", ".json", ".csv", ".parquet")

_DTYPES = {"answers": object, "subject": object, "relation": object, "object": object, "popularity": float}


class FactsError(ValueError):
    """A facts file cannot be used; the message names the file, the line or row, and the field."""


def make_fact_id(question: str, answers: Iterable[str]) -> str:
    """A stable id: the first 16 hex digits of sha256 over the normalised question and sorted answers.

    Case, punctuation, articles and the order of the aliases do not change it.
    """
    key = normalize(question) + "\x1f" + "\x1e".join(sorted(normalize(a) for a in answers))
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


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


DEFAULT_FACTS = Path(__file__).with_name("countries_test.jsonl")
"""The facts scored when none are given and no checkpoint names any: a fixed test split of the
built-in country facts, shipped with massshift (so ``countryinfo`` is not needed to read it)."""
DEFAULT_FACTS_ABOUT = (
    "the built-in default set: one-hop country facts (capital, currency, official language, region, subregion), "
    "the test side of `massshift facts countries` split by country (`massshift split --test-size 0.5 --seed 0 "
    "--group-by subject`), shipped with massshift"
)


def load_default_facts() -> pd.DataFrame:
    """The built-in default facts (``DEFAULT_FACTS``, described by ``DEFAULT_FACTS_ABOUT``)."""
    return load_facts(DEFAULT_FACTS, schema="canonical")


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
        out = {c: None if c != "answers" and is_missing(rec.get(c)) else rec.get(c) for c in FACT_COLUMNS}
        out["answers"] = [str(a) for a in out["answers"]]
        if out["popularity"] is not None:
            out["popularity"] = float(out["popularity"])
        lines.append(json.dumps(out, ensure_ascii=False))
    write_text(path, "".join(line + "\n" for line in lines))
    logger.info("wrote %d facts to %s", len(lines), path)
    return path


# --- reading files ---------------------------------------------------------------------------


def _read_records(path: Path) -> tuple[list[tuple[int, Any]], list[RowError], str]:
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
        errors: list[RowError] = []
        try:
            for number, rec in enumerate(csv.DictReader(io.StringIO(text, newline="")), start=1):
                if None in rec:
                    errors.append(RowError("(csv)", "more cells than the header has columns", number))
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


def _read_jsonl(data: bytes) -> tuple[list[tuple[int, Any]], list[RowError]]:
    items: list[tuple[int, Any]] = []
    errors: list[RowError] = []
    for number, raw in enumerate(data.removeprefix(codecs.BOM_UTF8).split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            items.append((number, json.loads(raw.decode("utf-8"))))
        except UnicodeDecodeError as err:
            errors.append(RowError("(encoding)", f"invalid UTF-8 at byte {err.start}; save as UTF-8", number))
        except json.JSONDecodeError as err:
            errors.append(RowError("(json)", f"malformed JSON at column {err.colno}: {err.msg}", number))
    return items, errors


def _decode(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise FactsError(f"{path}: line {line}: invalid UTF-8 (byte {err.start}); save as UTF-8") from None


# --- building the table ----------------------------------------------------------------------


def _build(
    items: list[tuple[int, Any]], errors: list[RowError], schema: str, skip_invalid: bool,
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
                f"{source}: cannot tell the schema from columns {sorted(columns_of(records))}; "
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
                raise RowError("fact_id", f"duplicate fact_id {row['fact_id']!r}, also at {unit} "
                                f"{seen[row['fact_id']]} (same question and answers when no id is given)")
        except RowError as err:
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
        raise RowError("(record)", f"expected an object with named fields, got {type(rec).__name__}")
    q_field, id_fields, s_field, r_field, o_field, pop_field = FIELDS[schema]
    question = text_field(rec, q_field, required=True)
    answers = answers_of(rec, schema)
    fact_id = next((i for i in (id_field(rec, f) for f in id_fields) if i is not None), None)
    return {
        "fact_id": fact_id if fact_id is not None else make_fact_id(question, answers),
        "question": question,
        "answers": answers,
        "subject": text_field(rec, s_field) if s_field else None,
        "relation": text_field(rec, r_field) if r_field else None,
        "object": text_field(rec, o_field) if o_field else None,
        "popularity": popularity_field(rec, pop_field) if pop_field else math.nan,
    }


