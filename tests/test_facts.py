"""Facts loading: every schema preset, every error path, skip_invalid, stable ids, round trip."""

from __future__ import annotations

import hashlib
import json
import logging
import math
from pathlib import Path

import pandas as pd
import pytest

from massshift.data.facts import (
    FACT_COLUMNS,
    FactsError,
    facts_from_records,
    load_facts,
    make_fact_id,
    save_facts,
)


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def rows(df: pd.DataFrame) -> list[dict]:
    """Records with NaN popularity turned into None so they compare with ==."""
    out = df.to_dict("records")
    for r in out:
        if isinstance(r["popularity"], float) and math.isnan(r["popularity"]):
            r["popularity"] = None
    return out


def fact(fact_id, question, answers, subject=None, relation=None, obj=None, popularity=None) -> dict:
    return {"fact_id": fact_id, "question": question, "answers": answers, "subject": subject,
            "relation": relation, "object": obj, "popularity": popularity}


# --- fact ids ---------------------------------------------------------------------------------


def test_make_fact_id_matches_the_documented_hash():
    key = "what is capital of france" + "\x1f" + "paris" + "\x1e" + "paris france"
    expected = hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]
    assert make_fact_id("What is the capital of France?", ["Paris", "Paris, France"]) == expected


def test_make_fact_id_ignores_case_punctuation_and_alias_order():
    a = make_fact_id("What is the capital of France?", ["Paris", "Paris, France"])
    b = make_fact_id("what is the CAPITAL of france", ["paris france", "PARIS"])
    assert a == b
    assert make_fact_id("What is the capital of France?", ["Lyon"]) != a
    assert make_fact_id("What is the capital of Spain?", ["Paris", "Paris, France"]) != a


# --- presets ----------------------------------------------------------------------------------


def test_canonical_jsonl_every_column(tmp_path, caplog):
    path = write_jsonl(tmp_path / "facts.jsonl", [
        {"fact_id": "f1", "question": " Capital of France? ", "answers": [" Paris ", "Paris", "", "City of Light"],
         "subject": "France", "relation": "capital", "object": "Paris", "popularity": 12, "extra": 1},
        {"id": 7, "question": "Who wrote Hamlet?", "answers": ["Shakespeare"]},
        {"question": "Largest planet?", "answer": "Jupiter", "popularity": None},
    ])
    with caplog.at_level(logging.INFO, logger="massshift.data.facts"):
        df = load_facts(path)
    assert list(df.columns) == list(FACT_COLUMNS)
    assert rows(df) == [
        fact("f1", "Capital of France?", ["Paris", "City of Light"], "France", "capital", "Paris", 12.0),
        fact("7", "Who wrote Hamlet?", ["Shakespeare"]),
        fact(make_fact_id("Largest planet?", ["Jupiter"]), "Largest planet?", ["Jupiter"]),
    ]
    assert df["popularity"].dtype == float
    assert df.attrs["schema"] == "canonical" and df.attrs["skipped"] == []
    assert "detected schema 'canonical'" in caplog.text


@pytest.mark.parametrize("wrap", [False, True])
def test_canonical_json_list_or_data_key(tmp_path, wrap):
    records = [{"fact_id": "a", "question": "Q1?", "answers": ["x"]}, {"fact_id": "b", "question": "Q2?",
                                                                         "answers": ["y", "z"]}]
    path = tmp_path / "facts.json"
    path.write_text(json.dumps({"data": records} if wrap else records), encoding="utf-8")
    assert rows(load_facts(path)) == [fact("a", "Q1?", ["x"]), fact("b", "Q2?", ["y", "z"])]


POPQA = [
    {"id": 4222362, "subj": "George Rankin", "prop": "occupation", "obj": "politician",
     "subj_id": 1, "s_pop": 142, "o_pop": 25692, "question": "What is George Rankin's occupation?",
     "possible_answers": '["politician", "political leader", "politician"]'},
    {"id": 6054, "subj": "Cardiff", "prop": "country", "obj": "United Kingdom", "subj_id": 2,
     "s_pop": 89061, "o_pop": 1, "question": "In what country is Cardiff?",
     "possible_answers": '["United Kingdom", "UK", "U.K."]'},
]
POPQA_EXPECTED = [
    fact("4222362", "What is George Rankin's occupation?", ["politician", "political leader"],
         "George Rankin", "occupation", "politician", 142.0),
    fact("6054", "In what country is Cardiff?", ["United Kingdom", "UK", "U.K."],
         "Cardiff", "country", "United Kingdom", 89061.0),
]


def test_popqa_jsonl(tmp_path):
    df = load_facts(write_jsonl(tmp_path / "popqa.jsonl", POPQA))
    assert df.attrs["schema"] == "popqa"
    assert rows(df) == POPQA_EXPECTED


def test_popqa_csv(tmp_path):
    path = tmp_path / "popqa.csv"
    pd.DataFrame(POPQA).to_csv(path, index=False)
    df = load_facts(path)
    assert df.attrs["schema"] == "popqa"
    assert rows(df) == POPQA_EXPECTED


def test_entityquestions_jsonl(tmp_path):
    path = write_jsonl(tmp_path / "P17.test.jsonl", [
        {"question": "Which country is Lake Baikal located in?", "answers": ["Russia", "Russian Federation"]},
    ])
    df = load_facts(path)
    assert df.attrs["schema"] == "entityquestions"
    q, a = "Which country is Lake Baikal located in?", ["Russia", "Russian Federation"]
    assert rows(df) == [fact(make_fact_id(q, a), q, a)]


def test_triviaqa_nested_jsonl(tmp_path):
    path = write_jsonl(tmp_path / "tqa.jsonl", [
        {"question_id": "tc_33", "question": "Which Lloyd Webber musical premiered in 1993?",
         "answer": {"value": "Sunset Boulevard", "aliases": ["Sunset Blvd", "Sunset Boulevard"],
                    "normalized_value": "sunset boulevard", "type": "WikipediaEntity"}},
    ])
    df = load_facts(path)
    assert df.attrs["schema"] == "triviaqa"
    assert rows(df) == [fact("tc_33", "Which Lloyd Webber musical premiered in 1993?",
                             ["Sunset Boulevard", "Sunset Blvd"])]


def test_triviaqa_flattened_parquet_and_csv(tmp_path):
    table = pd.DataFrame({
        "question_id": ["tc_1", "tc_2"],
        "question": ["Who was the man behind The Chipmunks?", "Which city hosted the 1908 Olympics?"],
        "answer.value": ["David Seville", "London"],
        "answer.aliases": [["David Seville", "Ross Bagdasarian"], ["London", "London, England"]],
        "answer.type": ["WikipediaEntity", "WikipediaEntity"],
    })
    expected = [
        fact("tc_1", "Who was the man behind The Chipmunks?", ["David Seville", "Ross Bagdasarian"]),
        fact("tc_2", "Which city hosted the 1908 Olympics?", ["London", "London, England"]),
    ]
    table.to_parquet(tmp_path / "tqa.parquet", index=False)
    table.to_csv(tmp_path / "tqa.csv", index=False)  # aliases become "['David Seville', ...]"
    for name in ("tqa.parquet", "tqa.csv"):
        df = load_facts(tmp_path / name)
        assert df.attrs["schema"] == "triviaqa", name
        assert rows(df) == expected, name


def test_nq_open_parquet(tmp_path):
    path = tmp_path / "nq.parquet"
    pd.DataFrame({"question": ["when was the last time anyone was on the moon"],
                  "answer": [["14 December 1972 UTC", "December 1972"]]}).to_parquet(path, index=False)
    df = load_facts(path)
    assert df.attrs["schema"] == "nq_open"
    q, a = "when was the last time anyone was on the moon", ["14 December 1972 UTC", "December 1972"]
    assert rows(df) == [fact(make_fact_id(q, a), q, a)]


def test_simpleqa_csv(tmp_path):
    path = tmp_path / "simple_qa_test_set.csv"
    pd.DataFrame({"metadata": ["{'topic': 'Science'}"],
                  "problem": ["Who received the IEEE Frank Rosenblatt Award in 2010?"],
                  "answer": ["Michio Sugeno"]}).to_csv(path, index=False)
    df = load_facts(path)
    assert df.attrs["schema"] == "simpleqa"
    q = "Who received the IEEE Frank Rosenblatt Award in 2010?"
    assert rows(df) == [fact(make_fact_id(q, ["Michio Sugeno"]), q, ["Michio Sugeno"])]


def test_canonical_parquet_with_missing_values(tmp_path):
    path = tmp_path / "facts.parquet"
    pd.DataFrame({"fact_id": ["a", "b"], "question": ["Q1?", "Q2?"], "answers": [["x", "X "], ["y"]],
                  "subject": ["S", None], "relation": [None, "r"], "object": ["x", None],
                  "popularity": [2.5, None]}).to_parquet(path, index=False)
    assert rows(load_facts(path)) == [fact("a", "Q1?", ["x", "X"], "S", None, "x", 2.5),
                                      fact("b", "Q2?", ["y"], None, "r", None, None)]


def test_explicit_schema_overrides_detection(tmp_path):
    path = write_jsonl(tmp_path / "f.jsonl", [{"question": "Q?", "answers": ["a"], "subject": "S"}])
    assert load_facts(path)["subject"].tolist() == ["S"]
    assert load_facts(path, schema="entityquestions")["subject"].tolist() == [None]


def test_save_facts_round_trip(tmp_path):
    df = facts_from_records([
        {"fact_id": "x1", "question": "Où est São Tomé?", "answers": ["Afrique", "Africa"],
         "subject": "São Tomé", "relation": "continent", "object": "Africa", "popularity": 3.5},
        {"question": "Q2?", "answers": ["b"]},
    ])
    path = save_facts(df, tmp_path / "out" / "facts.jsonl")
    back = load_facts(path)
    assert rows(back) == rows(df)
    assert "São Tomé" in path.read_text(encoding="utf-8")
    with pytest.raises(FactsError, match=r"\.jsonl"):
        save_facts(df, tmp_path / "facts.csv")


# --- errors -----------------------------------------------------------------------------------


def bad_line(tmp_path: Path, record_line: str, name: str = "bad.jsonl") -> Path:
    good = json.dumps({"question": "Good?", "answers": ["yes"]})
    path = tmp_path / name
    path.write_text(f"{good}\n\n{record_line}\n", encoding="utf-8")  # the bad record is on line 3
    return path


@pytest.mark.parametrize("record_line, field, reason", [
    ('{"question": "Q?", "answers": ["a"', "(json)", "malformed JSON"),
    ('{"answers": ["a"]}', "'question'", "missing"),
    ('{"question": "   ", "answers": ["a"]}', "'question'", "missing or empty"),
    ('{"question": 5, "answers": ["a"]}', "'question'", "must be a string"),
    ('{"question": "Q?"}', "'answers'", "missing"),
    ('{"question": "Q?", "answers": []}', "'answers'", "no non-empty answer"),
    ('{"question": "Q?", "answers": ["  ", ""]}', "'answers'", "no non-empty answer"),
    ('{"question": "Q?", "answers": 3}', "'answers'", "must be a list of strings, got int 3"),
    ('{"question": "Q?", "answers": ["a", 2]}', "'answers'", "only strings, got int 2"),
    ('{"question": "Q?", "answers": ["a"], "popularity": "high"}', "'popularity'", "must be a number"),
    ('{"question": "Q?", "answers": ["a"], "popularity": true}', "'popularity'", "must be a number, got bool"),
    ('{"question": "Q?", "answers": ["a"], "subject": 12}', "'subject'", "must be a string"),
    ('{"question": "Q?", "answers": ["a"], "id": 1.5}', "'id'", "string or an integer"),
    ('["Q?", "a"]', "(record)", "expected an object"),
])
def test_bad_jsonl_line_names_file_line_and_field(tmp_path, record_line, field, reason):
    path = bad_line(tmp_path, record_line)
    with pytest.raises(FactsError) as err:
        load_facts(path)
    msg = str(err.value)
    assert str(path) in msg and "line 3" in msg and field in msg and reason in msg, msg


def test_invalid_utf8_names_the_line(tmp_path):
    path = tmp_path / "enc.jsonl"
    path.write_bytes(b'{"question": "Q1?", "answers": ["a"]}\n{"question": "Q\xff?", "answers": ["a"]}\n')
    with pytest.raises(FactsError, match=r"enc\.jsonl: line 2: field '\(encoding\)': invalid UTF-8"):
        load_facts(path)
    csv_path = tmp_path / "enc.csv"
    csv_path.write_bytes(b"question,answer\nQ1?,a\nQ2?,a\xe9\n")
    with pytest.raises(FactsError, match=r"enc\.csv: line 3: invalid UTF-8"):
        load_facts(csv_path)


def test_duplicate_ids_name_both_lines(tmp_path):
    path = write_jsonl(tmp_path / "dup.jsonl", [
        {"fact_id": "a", "question": "Q1?", "answers": ["x"]},
        {"fact_id": "b", "question": "Q2?", "answers": ["x"]},
        {"fact_id": "a", "question": "Q3?", "answers": ["y"]},
    ])
    with pytest.raises(FactsError, match=r"dup\.jsonl: line 3: field 'fact_id': duplicate fact_id 'a', also at line 1"):
        load_facts(path)
    same = write_jsonl(tmp_path / "same.jsonl", [{"question": "Q?", "answers": ["x", "y"]},
                                                 {"question": "q", "answers": ["Y", "X"]}])
    with pytest.raises(FactsError, match=r"line 2: field 'fact_id': duplicate .* also at line 1"):
        load_facts(same)


def test_csv_and_popqa_row_errors(tmp_path):
    path = tmp_path / "p.csv"
    pd.DataFrame({"question": ["Q1?", "Q2?"], "possible_answers": ['["a"]', "a"],
                  "s_pop": ["3", "x"]}).to_csv(path, index=False)
    with pytest.raises(FactsError) as err:
        load_facts(path)
    assert "p.csv: row 2: field 'possible_answers': must be a list of strings, got str 'a'" in str(err.value)
    extra = tmp_path / "extra.csv"
    extra.write_text("question,answers\nQ?,a,b\n", encoding="utf-8")
    with pytest.raises(FactsError, match=r"extra\.csv: row 1: field '\(csv\)': more cells"):
        load_facts(extra)


@pytest.mark.parametrize("name, content, pattern", [
    ("empty.jsonl", "", r"empty\.jsonl: the file is empty"),
    ("blank.json", "  \n", r"blank\.json: the file is empty"),
    ("header.csv", "question,answers\n", r"header\.csv: no facts"),
    ("facts.txt", "x", r"facts\.txt: unsupported extension '\.txt'"),
    ("broken.json", '[\n{"question": "Q?",\n "answers": ]', r"broken\.json: line 3: malformed JSON"),
    ("scalar.json", '{"rows": []}', r"scalar\.json: expected a list of objects"),
    ("cols.jsonl", '{"prompt": "Q?", "target": "a"}\n', r"cols\.jsonl: cannot tell the schema from columns "
                                                         r"\['prompt', 'target'\]; known presets: canonical, popqa"),
])
def test_file_level_errors(tmp_path, name, content, pattern):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(FactsError, match=pattern):
        load_facts(path)


def test_missing_file_and_unknown_schema(tmp_path):
    with pytest.raises(FactsError, match=r"nowhere\.jsonl: no such file"):
        load_facts(tmp_path / "nowhere.jsonl")
    path = write_jsonl(tmp_path / "f.jsonl", [{"question": "Q?", "answers": ["a"]}])
    with pytest.raises(FactsError, match=r"unknown schema 'squad'; use 'auto' or one of canonical"):
        load_facts(path, schema="squad")


# --- skip_invalid -----------------------------------------------------------------------------


def test_skip_invalid_counts_and_lists_errors(tmp_path, caplog):
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"\n".join([
        b'{"question": "Q1?", "answers": ["a"]}',
        b'{"question": "Q2?", "answers": 3}',
        b'not json',
        b'{"question": "Q4?", "answers": ["d"]}',
        b'{"question": "Q\xff?", "answers": ["e"]}',
        b'{"question": "q1", "answers": ["A"]}',
        b'{"question": "Q7?", "answers": ["g"]}',
    ]) + b"\n")
    with caplog.at_level(logging.WARNING, logger="massshift.data.facts"):
        df = load_facts(path, skip_invalid=True)
    assert df["question"].tolist() == ["Q1?", "Q4?", "Q7?"]
    skipped = df.attrs["skipped"]
    assert [s.split(": ")[1] for s in skipped] == ["line 2", "line 3", "line 5", "line 6"]
    assert "field 'answers'" in skipped[0] and "field '(json)'" in skipped[1]
    assert "field '(encoding)'" in skipped[2] and "duplicate fact_id" in skipped[3]
    assert "skipped 4 invalid lines" in caplog.text
    with pytest.raises(FactsError, match=r"line 2: field 'answers'.*\(and 3 more bad lines\)"):
        load_facts(path)


def test_skip_invalid_with_no_valid_row_still_raises(tmp_path):
    path = write_jsonl(tmp_path / "allbad.jsonl", [{"question": "Q?"}, {"answers": ["a"]}])
    with pytest.raises(FactsError, match=r"no valid facts; 2 bad lines"):
        load_facts(path, skip_invalid=True)
