"""Fabricated-subject controls: made from real questions, never a real subject, seeded, kept apart."""

import pandas as pd
import pytest

from massshift.data.controls import CONTROL_PREFIX, control_facts, eligible, split_controls, with_controls
from massshift.data.matching import normalize


@pytest.fixture
def facts():
    rows = []
    for country, capital, cont in [("France", "Paris", "Europe"), ("Peru", "Lima", "South America"),
                                   ("Japan", "Tokyo", "Asia"), ("Chile", "Santiago", "South America"),
                                   ("Kenya", "Nairobi", "Africa")]:
        rows.append({"fact_id": f"cap-{country}", "question": f"What is the capital of {country}?",
                     "answers": [capital], "subject": country, "relation": "capital"})
        rows.append({"fact_id": f"con-{country}", "question": f"On which continent is {country}?",
                     "answers": [cont], "subject": country, "relation": "continent"})
    rows.append({"fact_id": "odd", "question": "Who wrote it?", "answers": ["Anon"], "subject": "Hamlet",
                 "relation": "author"})  # subject not in the question: not eligible
    return pd.DataFrame(rows)


def test_controls_per_relation_from_real_questions(facts):
    ctrl = control_facts(facts, 6, seed=0)
    assert ctrl.groupby("relation").size().to_dict() == {"capital": 6, "continent": 6}
    real = {normalize(s) for s in facts["subject"]}
    for q, s, rel, ans in zip(ctrl["question"], ctrl["subject"], ctrl["relation"], ctrl["answers"]):
        assert normalize(s) not in real and s in q
        assert not any(f" {r} " in f" {normalize(q)} " for r in real)  # no real subject left in the question
        templates = {t.replace(subj, s) for t, subj in zip(facts["question"], facts["subject"])}
        assert q in templates
        pool = [list(a) for a in facts.loc[facts["relation"] == rel, "answers"]]
        assert list(ans) in pool
    assert ctrl["fact_id"].str.startswith(CONTROL_PREFIX).all() and ctrl["fact_id"].is_unique
    assert ctrl["subject"].is_unique


def test_controls_are_seeded(facts):
    pd.testing.assert_frame_equal(control_facts(facts, 4, seed=3), control_facts(facts, 4, seed=3))
    assert control_facts(facts, 4, seed=3)["subject"].tolist() != control_facts(facts, 4, seed=4)["subject"].tolist()


def test_no_controls_without_subjects_in_questions(facts):
    assert not eligible(facts.drop(columns=["subject"])).any()
    assert len(control_facts(facts.drop(columns=["relation"]), 5)) == 0
    assert eligible(facts).sum() == 10


def test_with_and_split_controls(facts):
    both = with_controls(facts, 3)
    assert len(both) == len(facts) + 6 and (~both["is_control"]).sum() == len(facts)
    real, ctrl = split_controls(both)
    assert real["fact_id"].tolist() == facts["fact_id"].tolist() and len(ctrl) == 6
    with pytest.raises(ValueError, match=">= 0"):
        control_facts(facts, -1)
