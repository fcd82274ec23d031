"""The built-in default facts: shipped with the package, and the same split that their description names."""

from __future__ import annotations

import pytest

from massshift.data.facts import DEFAULT_FACTS, load_default_facts


def test_default_facts_ship_with_the_package():
    facts = load_default_facts()
    assert DEFAULT_FACTS.is_file() and len(facts) > 400
    assert set(facts["relation"]) == {"capital", "currency", "official_language", "region", "subregion"}
    assert facts["fact_id"].str.startswith("country:").all()


def test_default_facts_are_the_described_split_of_the_country_facts():
    pytest.importorskip("countryinfo", reason="countryinfo (the real extra) rebuilds the country facts")
    from massshift.data.countries import country_facts
    from massshift.data.split import split_facts

    test = split_facts(country_facts(), test_size=0.5, seed=0, group_by="subject").test
    shipped = load_default_facts()
    assert sorted(test["fact_id"]) == sorted(shipped["fact_id"])
    by_id = shipped.set_index("fact_id")
    for row in test.itertuples():
        assert list(by_id.loc[row.fact_id, "answers"]) == list(row.answers), row.fact_id
