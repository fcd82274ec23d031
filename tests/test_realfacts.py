"""Country facts from countryinfo + babel (the `real` extra): content, rules, determinism, CLI."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from massshift.cli import app
from massshift.data.countries import RELATIONS, TEMPLATES, country_facts
from massshift.data.facts import FACT_COLUMNS, load_facts
from massshift.data.matching import normalize
from massshift.data.split import split_facts, verify_disjoint


@pytest.fixture(scope="module")
def facts():
    return country_facts()


def _fact(df, subject, relation):
    rows = df[(df["subject"] == subject) & (df["relation"] == relation)]
    return rows.iloc[0] if len(rows) else None


def test_columns_counts_and_relations(facts):
    assert list(facts.columns) == list(FACT_COLUMNS)
    assert set(facts["relation"]) == set(RELATIONS)
    counts = facts["relation"].value_counts()
    assert counts.min() >= 140 and len(facts) > 1000
    assert facts["fact_id"].is_unique and facts["question"].is_unique
    assert facts["subject"].notna().all() and facts["object"].notna().all()
    assert (facts["object"] == facts["answers"].map(lambda a: a[0])).all()


def test_known_facts_and_aliases(facts):
    fr = _fact(facts, "France", "capital")
    assert fr["answers"] == ["Paris"] and "France" in fr["question"] and fr["fact_id"] == "country:FRA:capital"
    us = _fact(facts, "United States", "currency")
    assert us["answers"][:2] == ["US Dollar", "USD"] and "the United States" in us["question"]
    assert _fact(facts, "Japan", "official_language")["answers"] == ["Japanese"]
    assert _fact(facts, "Brazil", "capital")["answers"] == ["Brasília", "Brasilia"]
    assert "South America" in _fact(facts, "Peru", "region")["answers"]
    assert "Southeast Asia" in _fact(facts, "Thailand", "subregion")["answers"]
    assert facts.loc[facts["subject"] == "India", "popularity"].iloc[0] > 1e9


def test_answer_inside_question_is_dropped(facts):
    assert _fact(facts, "Djibouti", "capital") is None
    assert _fact(facts, "South Africa", "region") is None
    assert _fact(facts, "Central African Republic", "region") is None
    for q, answers in zip(facts["question"], facts["answers"]):
        nq = f" {normalize(q)} "
        assert not any(f" {normalize(a)}" in nq for a in answers), q
    assert facts.attrs["dropped"]["capital: answer inside the question"] >= 5


def test_ambiguous_data_is_left_out(facts):
    assert _fact(facts, "Switzerland", "official_language") is None  # four languages
    assert _fact(facts, "Panama", "currency") is None  # two legal tenders
    assert _fact(facts, "Croatia", "currency") is None  # countryinfo: kuna, babel: euro
    assert _fact(facts, "Switzerland", "currency")["answers"][:2] == ["Swiss Franc", "CHF"]  # fund codes dropped
    assert not facts["subject"].isin(["Scotland", "Serbia and Montenegro", "Wales"]).any()


def test_deterministic_and_all_templates():
    a, b = country_facts(("capital",)), country_facts(("capital",))
    assert a.equals(b)
    every = country_facts(("capital",), all_templates=True)
    n_templates = len(TEMPLATES["capital"])
    fr = every[every["subject"] == "France"]
    assert len(fr) == n_templates and fr["question"].nunique() == n_templates
    assert set(a["question"]) <= set(every["question"])
    # paraphrases share the triple, so the fact-level split keeps them on one side
    split = split_facts(every, test_size=0.5, seed=0)
    assert verify_disjoint(split.train, split.test) == []
    assert not set(split.train["subject"]) & set(split.test["subject"])


def test_unknown_relation_is_an_error():
    with pytest.raises(ValueError, match="unknown relation"):
        country_facts(("capitol",))


def test_cli_writes_loadable_facts(tmp_path):
    out = tmp_path / "countries.jsonl"
    res = CliRunner().invoke(app, ["facts", "countries", "--out", str(out), "-r", "capital", "-r", "region"])
    assert res.exit_code == 0, res.output
    df = load_facts(out)
    assert set(df["relation"]) == {"capital", "region"}
    assert f"wrote {len(df)} facts" in res.output and "answer inside the question" in res.output
    bad = CliRunner().invoke(app, ["facts", "countries", "--out", str(tmp_path / "x.csv")])
    assert bad.exit_code == 2 and ".jsonl" in bad.output


def test_study_cli_rejects_an_unknown_study(tmp_path):
    res = CliRunner().invoke(app, ["study", "gemma-countries", "--out", str(tmp_path / "s")])
    assert res.exit_code == 2 and "unknown study 'gemma-countries'" in res.output
