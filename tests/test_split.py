"""Fact-level split and dedup: the disjointness guarantee, the audits, seeds, and the run-dir files."""

from __future__ import annotations

import itertools
import json
import random

import numpy as np
import pandas as pd
import pytest
import yaml

from massshift.data.facts import facts_from_records, load_facts
from massshift.data.matching import normalize
from massshift.data.split import (
    DEDUP_AUDIT_COLUMNS,
    Overlap,
    SplitConfig,
    dedup,
    overlap_groups,
    split_facts,
    verify_disjoint,
    write_dedup,
    write_split,
)

CITIES = ["Paris", "London", "Rome", "Vienna", "Prague", "Lisbon", "Madrid", "Berlin", "Oslo", "Dublin",
          "Warsaw", "Athens", "Bern", "Riga", "Sofia", "Zagreb", "Tallinn"]
JOBS = ["painter", "poet", "chemist", "composer", "architect", "physicist", "sculptor"]


def oracle_keys(fact: dict) -> tuple[list[str], str, set[str]]:
    triple = [normalize(fact[k] or "") for k in ("subject", "relation", "object")]
    return triple, normalize(fact["question"]), {normalize(x) for x in fact["answers"]}


def oracle_overlap(a: dict, b: dict) -> bool:
    """The three rules written out pairwise, independently of split.py's indexes."""
    (triple_a, q_a, ans_a), (triple_b, q_b, ans_b) = oracle_keys(a), oracle_keys(b)
    return keys_overlap(triple_a, q_a, ans_a, triple_b, q_b, ans_b)


def keys_overlap(triple_a, q_a, ans_a, triple_b, q_b, ans_b) -> bool:
    if all(triple_a) and triple_a == triple_b:
        return True
    if q_a == q_b:
        return True
    return bool(triple_a[0]) and triple_a[0] == triple_b[0] and bool(ans_a & ans_b)


def oracle_cross_pairs(train: pd.DataFrame, test: pd.DataFrame) -> list[tuple[str, str]]:
    """Every (train id, test id) pair that overlaps, by brute force over all pairs."""
    a_keys = [(f["fact_id"], oracle_keys(f)) for f in train.to_dict("records")]
    b_keys = [(f["fact_id"], oracle_keys(f)) for f in test.to_dict("records")]
    return [(ia, ib) for (ia, ka), (ib, kb) in itertools.product(a_keys, b_keys) if keys_overlap(*ka, *kb)]


@pytest.fixture
def people_facts() -> pd.DataFrame:
    """~300 facts: people with paraphrased birthplace questions, shared birth/death cities, and
    subject-less trivia asked twice with different wording of case and punctuation."""
    rng = random.Random(7)
    records = []
    for i in range(70):
        person = f"Person {i}"
        born = CITIES[i % len(CITIES)]
        died = born if i % 4 == 0 else CITIES[(i * 7 + 3) % len(CITIES)]
        triple = {"subject": person, "relation": "place of birth", "object": born}
        records.append({"question": f"Where was {person} born?", "answers": [born], **triple})
        if i % 2 == 0:
            records.append({"question": f"In which city was {person} born?", "answers": [born], **triple})
        records.append({"question": f"Where did {person} die?", "answers": [died], "subject": person,
                        "relation": "place of death", "object": died})
        records.append({"question": f"What was the occupation of {person}?", "answers": [rng.choice(JOBS)],
                        "subject": person, "relation": "occupation"})
    for k in range(30):
        records.append({"question": f"Trivia question number {k}?", "answers": [f"answer {k}"]})
        if k % 2 == 0:
            records.append({"question": f"TRIVIA question number {k}", "answers": [f"reply {k}"]})
    return facts_from_records(records)


def test_split_guarantee_on_generated_facts(people_facts):
    df = people_facts
    n = len(df)
    assert 290 <= n <= 310
    result = split_facts(df, test_size=0.5, seed=3)
    assert verify_disjoint(result.train, result.test) == []
    assert oracle_cross_pairs(result.train, result.test) == []
    assert sorted(result.train["fact_id"].tolist() + result.test["fact_id"].tolist()) == sorted(df["fact_id"])
    # paraphrases of one triple land on one side
    side = dict(zip(result.audit["fact_id"], result.audit["side"]))
    for (s, r, o), group in df.dropna(subset=["object"]).groupby(["subject", "relation", "object"]):
        assert len({side[f] for f in group["fact_id"]}) == 1, (s, r, o)
    # a person who died where they were born: both facts on one side (subject_answer_overlap)
    person0 = df.loc[(df["subject"] == "Person 0") & df["relation"].str.startswith("place of"), "fact_id"]
    assert len(person0) == 3
    assert len({side[f] for f in person0}) == 1
    max_group = int(result.audit["group_size"].max())
    assert max_group >= 3  # Person 0: two birthplace wordings + death in the same city
    assert abs(len(result.test) - round(0.5 * n)) <= max_group


def test_split_sizes_seed_and_audit(people_facts):
    df = people_facts
    a = split_facts(df, test_size=0.3, seed=1)
    b = split_facts(df, test_size=0.3, seed=1)
    c = split_facts(df, test_size=0.3, seed=2)
    assert a.test["fact_id"].tolist() == b.test["fact_id"].tolist()
    assert a.test["fact_id"].tolist() != c.test["fact_id"].tolist()
    for result in (a, c):
        assert abs(len(result.test) - round(0.3 * len(df))) <= 2
        assert verify_disjoint(result.train, result.test) == []
    audit = a.audit
    assert list(audit.columns) == ["fact_id", "side", "group_id", "group_size"]
    assert audit["fact_id"].tolist() == df["fact_id"].tolist()
    assert set(audit.loc[audit["side"] == "test", "fact_id"]) == set(a.test["fact_id"])
    counts = audit["group_id"].map(audit["group_id"].value_counts())
    assert (audit["group_size"] == counts).all()
    assert audit.groupby("group_id")["side"].nunique().max() == 1


def test_a_naive_row_split_would_leak(people_facts):
    """The guarantee is not vacuous: splitting rows at random leaves overlapping facts."""
    mask = np.random.default_rng(0).random(len(people_facts)) < 0.5
    train, test = people_facts[~mask], people_facts[mask]
    found = verify_disjoint(train, test)
    leaked = {t for _, t in oracle_cross_pairs(train, test)}
    assert len(leaked) > 10
    assert sorted(o.test_fact_id for o in found) == sorted(leaked)
    assert {o.rule for o in found} == {"same_triple", "same_question", "subject_answer_overlap"}


def test_overlap_groups_small_example():
    df = facts_from_records([
        {"question": "A?", "answers": ["x"], "subject": "S", "relation": "r", "object": "x"},
        {"question": "B?", "answers": ["y"]},
        {"question": "C?", "answers": ["X."], "subject": "s"},  # joins 0 via subject + answer
        {"question": "b", "answers": ["z"]},  # joins 1 via question
        {"question": "D?", "answers": ["x"], "subject": "T"},  # other subject: alone
    ])
    assert overlap_groups(df).tolist() == [0, 1, 0, 1, 2]


@pytest.mark.parametrize("kwargs, message", [
    ({"test_size": 0}, "strictly between 0 and 1"),
    ({"test_size": 1.0}, "strictly between 0 and 1"),
    ({"test_size": "0.5"}, "must be a number"),
    ({"test_size": True}, "must be a number"),
    ({"seed": -1}, "non-negative integer"),
    ({"seed": 1.5}, "non-negative integer"),
])
def test_split_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SplitConfig(**kwargs)


def test_split_rejects_duplicate_ids_and_missing_columns():
    df = pd.DataFrame({"fact_id": ["a", "a"], "question": ["Q1?", "Q2?"], "answers": [["x"], ["y"]]})
    with pytest.raises(ValueError, match="duplicate fact_id 'a'"):
        split_facts(df)
    with pytest.raises(ValueError, match="lacks column"):
        split_facts(df.drop(columns="answers"))


# --- dedup ------------------------------------------------------------------------------------


def test_dedup_audit_rows_one_by_one():
    train = facts_from_records([
        {"fact_id": "T1", "question": "Where was Ada Lovelace born?", "answers": ["London"],
         "subject": "Ada Lovelace", "relation": "place of birth", "object": "London"},
        {"fact_id": "T2", "question": "What is the capital of Peru?", "answers": ["Lima"]},
        {"fact_id": "T3", "question": "What did Marie Curie study?", "answers": ["physics", "chemistry"],
         "subject": "Marie Curie", "relation": "field", "object": "physics"},
        {"fact_id": "T4", "question": "Who painted the Mona Lisa?", "answers": ["Leonardo da Vinci"],
         "subject": "Mona Lisa", "relation": "creator", "object": "Leonardo da Vinci"},
        {"fact_id": "T5", "question": "WHERE WAS ADA LOVELACE BORN", "answers": ["London, England"]},
    ])
    test = facts_from_records([
        {"fact_id": "E1", "question": "In which city was Ada Lovelace born?", "answers": ["London"],
         "subject": "ada lovelace", "relation": "Place of birth", "object": "London."},
        {"fact_id": "E2", "question": "what is the capital of peru", "answers": ["Lima", "Ciudad de los Reyes"]},
        {"fact_id": "E3", "question": "Which prize did Marie Curie win twice?", "answers": ["Nobel Prize", "Chemistry"],
         "subject": "Marie Curie", "relation": "award", "object": "Nobel Prize"},
        {"fact_id": "E4", "question": "Who painted The Starry Night?", "answers": ["Vincent van Gogh"],
         "subject": "The Starry Night", "relation": "creator", "object": "Vincent van Gogh"},
        {"fact_id": "E5", "question": "Where was Ada Lovelace born?", "answers": ["London"]},
        {"fact_id": "E6", "question": "Where is the Mona Lisa displayed?", "answers": ["Louvre"],
         "subject": "Mona Lisa"},
        {"fact_id": "E7", "question": "Where did Charles Dickens die?", "answers": ["London"],
         "subject": "Charles Dickens"},
        {"fact_id": "E8", "question": "What is the capital of Peru?", "answers": ["London"],
         "subject": "Ada Lovelace"},
    ])
    result = dedup(train, test)
    assert list(result.audit.columns) == list(DEDUP_AUDIT_COLUMNS)
    assert result.audit.to_dict("records") == [
        # same triple after normalisation (case, final full stop); also subject+answer, but triple comes first
        {"removed_fact_id": "E1", "removed_question": "In which city was Ada Lovelace born?",
         "train_fact_id": "T1", "train_question": "Where was Ada Lovelace born?", "rule": "same_triple"},
        {"removed_fact_id": "E2", "removed_question": "what is the capital of peru",
         "train_fact_id": "T2", "train_question": "What is the capital of Peru?", "rule": "same_question"},
        # "Chemistry" is one of T3's answers and the subject is the same
        {"removed_fact_id": "E3", "removed_question": "Which prize did Marie Curie win twice?",
         "train_fact_id": "T3", "train_question": "What did Marie Curie study?",
         "rule": "subject_answer_overlap"},
        # T1 and T5 both ask it; the first train fact is reported
        {"removed_fact_id": "E5", "removed_question": "Where was Ada Lovelace born?",
         "train_fact_id": "T1", "train_question": "Where was Ada Lovelace born?", "rule": "same_question"},
        # matches T1 by subject+answer and T2 by question: the earlier rule wins over the earlier row
        {"removed_fact_id": "E8", "removed_question": "What is the capital of Peru?",
         "train_fact_id": "T2", "train_question": "What is the capital of Peru?", "rule": "same_question"},
    ]
    # same subject with another answer (E6), same answer with another subject (E7): kept
    assert result.test["fact_id"].tolist() == ["E4", "E6", "E7"]
    assert verify_disjoint(train, result.test) == []
    assert verify_disjoint(train, test) == [
        Overlap("E1", "T1", "same_triple"), Overlap("E2", "T2", "same_question"),
        Overlap("E3", "T3", "subject_answer_overlap"), Overlap("E5", "T1", "same_question"),
        Overlap("E8", "T2", "same_question"),
    ]
    assert sorted({t for _, t in oracle_cross_pairs(train, test)}) == ["E1", "E2", "E3", "E5", "E8"]


# --- PopQA-shaped file and the run-dir writers ------------------------------------------------


def popqa_records() -> list[dict]:
    records = []
    for i in range(40):
        subj = f"Entity {i}"
        records.append({"id": 3 * i, "subj": subj, "prop": "occupation", "obj": JOBS[i % 7], "s_pop": 10 * i,
                        "question": f"What is {subj}'s occupation?",
                        "possible_answers": json.dumps([JOBS[i % 7], JOBS[i % 7].title()])})
        records.append({"id": 3 * i + 1, "subj": subj, "prop": "place of birth", "obj": CITIES[i % 17],
                        "s_pop": 10 * i, "question": f"In what city was {subj} born?",
                        "possible_answers": json.dumps([CITIES[i % 17]])})
        if i % 3 == 0:  # PopQA asks some facts twice under different relation names
            records.append({"id": 3 * i + 2, "subj": subj, "prop": "position held", "obj": JOBS[i % 7],
                            "s_pop": 10 * i, "question": f"What position does {subj} hold?",
                            "possible_answers": json.dumps([JOBS[i % 7]])})
    return records


def test_popqa_file_through_split_has_no_overlaps(tmp_path):
    path = tmp_path / "popqa.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in popqa_records()), encoding="utf-8")
    df = load_facts(path)
    assert df.attrs["schema"] == "popqa" and len(df) == 94
    result = split_facts(df, test_size=0.5, seed=0)
    assert verify_disjoint(result.train, result.test) == []
    assert oracle_cross_pairs(result.train, result.test) == []
    assert abs(len(result.test) - 47) <= 2
    groups = result.audit.set_index("fact_id")["group_size"]
    assert groups["0"] == 2 and groups["1"] == 1 and groups["3"] == 1  # id 0 and 2: same subject + answer


def test_write_split_and_dedup_run_dirs(tmp_path, people_facts):
    result = split_facts(people_facts, test_size=0.5, seed=4)
    out = write_split(result, tmp_path / "split", {"input": "facts.jsonl", "test_size": 0.5, "seed": 4})
    assert sorted(p.name for p in out.iterdir()) == ["audit.csv", "config.yaml", "env.json", "test.jsonl",
                                                     "train.jsonl"]
    assert load_facts(out / "train.jsonl")["fact_id"].tolist() == result.train["fact_id"].tolist()
    assert load_facts(out / "test.jsonl")["answers"].tolist() == result.test["answers"].tolist()
    audit = pd.read_csv(out / "audit.csv", dtype={"fact_id": str})
    assert audit["side"].tolist() == result.audit["side"].tolist()
    assert yaml.safe_load((out / "config.yaml").read_text()) == {"input": "facts.jsonl", "test_size": 0.5,
                                                                 "seed": 4}
    assert json.loads((out / "env.json").read_text())["seed"] == 4

    leaky_test = pd.concat([result.test, result.train.head(5)], ignore_index=True)
    deduped = dedup(result.train, leaky_test)
    out2 = write_dedup(deduped, tmp_path / "dedup", {"train": "train.jsonl", "test": "test.jsonl"})
    assert sorted(p.name for p in out2.iterdir()) == ["audit.csv", "config.yaml", "env.json", "test.jsonl"]
    assert load_facts(out2 / "test.jsonl")["fact_id"].tolist() == result.test["fact_id"].tolist()
    removed = pd.read_csv(out2 / "audit.csv", dtype=str)
    assert removed["removed_fact_id"].tolist() == result.train["fact_id"].head(5).tolist()
    by_id = result.train.set_index("fact_id")
    for row in removed.itertuples():  # each removed fact really overlaps the train fact the audit names
        assert oracle_overlap(by_id.loc[row.removed_fact_id].to_dict(), by_id.loc[row.train_fact_id].to_dict())


def test_group_by_subject_keeps_people_on_one_side():
    import pandas as pd

    from massshift.data.split import split_facts, verify_disjoint

    rows = [{"fact_id": f"p{p}-{r}", "question": f"What is the {r} of person {p}?", "answers": [f"v{p}{r}"],
             "subject": f"person {p}", "relation": r, "object": f"v{p}{r}", "popularity": None}
            for p in range(40) for r in ("city", "employer", "pet")]
    df = pd.DataFrame(rows)
    res = split_facts(df, test_size=0.25, seed=3, group_by="subject")
    assert verify_disjoint(res.train, res.test) == []
    assert not set(res.train["subject"]) & set(res.test["subject"])
    assert len(res.test) == 30  # 10 whole people of 40
    plain = split_facts(df, test_size=0.25, seed=3)
    assert set(plain.train["subject"]) & set(plain.test["subject"])  # without it people are cut across sides
    with pytest.raises(ValueError, match="group_by column 'nope'"):
        split_facts(df, group_by="nope")
