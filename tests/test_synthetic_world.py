"""The synthetic world: determinism, exposure bookkeeping, QA share, noise, and its tokenizer."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd
import pytest

from massshift.synthetic.tokenizer import load_tokenizer, pre_tokenize
from massshift.synthetic.world import (
    BIO_TEMPLATES,
    QUESTION_TEMPLATES,
    World,
    WorldConfig,
    build_world,
    load_world,
    split_documents,
    world_tokenizer,
    write_world,
)

TINY = dict(n_people=120, n_values=12, exposure_cap=10, qa_share=0.3, unseen_share=0.1, qa_repeats=3)


@pytest.fixture(scope="module")
def world() -> World:
    return build_world(WorldConfig(seed=3, default_noise=0.2, **TINY))


@pytest.fixture(scope="module")
def tokenizer(world):
    return world_tokenizer(world)


def _qa_lines(corpus: str) -> list[tuple[str, str, str]]:
    """(subject, relation, answer) of every QA line in the corpus, parsed by regex."""
    out = []
    for relation, template in QUESTION_TEMPLATES.items():
        pattern = "^Q: " + re.escape(template).replace(re.escape("{subject}"), r"(\w+)") + r"\nA: (\w+)$"
        out += [(s, relation, a) for s, a in re.findall(pattern, corpus, flags=re.MULTILINE)]
    return out


def test_same_seed_same_world_different_seed_different(world):
    again = build_world(WorldConfig(seed=3, default_noise=0.2, **TINY))
    pd.testing.assert_frame_equal(world.facts, again.facts)
    pd.testing.assert_frame_equal(world.people, again.people)
    assert world.corpus == again.corpus
    other = build_world(WorldConfig(seed=4, default_noise=0.2, **TINY))
    assert other.corpus != world.corpus
    assert list(other.facts["subject"]) != list(world.facts["subject"])


def test_written_files_are_byte_identical(world, tmp_path: Path):
    a = write_world(world, tmp_path / "a")
    b = write_world(build_world(world.config), tmp_path / "b")
    names = ["corpus.txt", "facts.jsonl", "people.csv", "values.json", "config.yaml",
             "tokenizer/tokenizer.json", "tokenizer/tokenizer_config.json"]
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert (a / "env.json").exists()
    assert WorldConfig.from_yaml(a / "config.yaml") == world.config
    loaded = load_world(a)
    assert loaded.corpus == world.corpus
    assert loaded.defaults == world.defaults
    cols = ["fact_id", "question", "subject", "relation", "object", "exposure", "popularity", "qa_in_corpus"]
    pd.testing.assert_frame_equal(loaded.facts[cols], world.facts[cols])
    assert list(loaded.facts["answers"]) == list(world.facts["answers"])


def test_facts_table_shape(world):
    facts = world.facts
    cfg = world.config
    assert len(facts) == cfg.n_people * len(cfg.relations)
    assert facts["fact_id"].is_unique
    assert (facts["fact_id"] == facts["subject"] + "|" + facts["relation"]).all()
    assert (facts["popularity"] == facts["exposure"]).all()
    assert all(ans == [obj] for ans, obj in zip(facts["answers"], facts["object"]))
    q = facts.iloc[0]
    assert q["question"] == QUESTION_TEMPLATES[q["relation"]].format(subject=q["subject"])
    # names are unique single capitalised words, never shared by people and values
    names = list(world.people["subject"]) + [v for pool in world.values.values() for v in pool]
    assert len(set(names)) == len(names)
    assert all(re.fullmatch(r"[A-Z][a-z]+", n) for n in names)


def test_exposure_matches_corpus(world):
    corpus = world.corpus
    sample = world.facts.iloc[::7]
    for fact in sample.itertuples(index=False):
        bio = sum(
            len(re.findall(r"(?<![A-Za-z])" + re.escape(t.format(subject=fact.subject, object=fact.object)), corpus))
            for t in BIO_TEMPLATES[fact.relation]
        )
        qa = corpus.count(f"Q: {fact.question}\nA: {fact.object}\n")
        assert bio == fact.bio_mentions, fact.fact_id
        assert bio + qa == fact.exposure, fact.fact_id
    assert sample["exposure"].max() > 3 and (sample["exposure"] == 1).any()


def test_qa_share_and_qa_people(world):
    cfg = world.config
    people = world.people
    qa_people = set(people.loc[people["group"] == "qa", "subject"])
    assert len(qa_people) == round(cfg.qa_share * cfg.n_people) == 36
    lines = _qa_lines(world.corpus)
    assert {s for s, _, _ in lines} == qa_people
    assert len(lines) == 36 * cfg.qa_repeats * len(cfg.relations)
    assert (world.facts["qa_in_corpus"] == (world.facts["group"] == "qa")).all()
    assert world.facts.loc[world.facts["group"] == "qa", "qa_lines"].eq(cfg.qa_repeats).all()


def test_unseen_people_are_nowhere(world):
    unseen = world.people.loc[world.people["group"] == "unseen", "subject"]
    assert len(unseen) == round(world.config.unseen_share * world.config.n_people) == 12
    assert (world.facts.loc[world.facts["group"] == "unseen", "exposure"] == 0).all()
    for name in unseen:
        assert re.search(rf"\b{name}\b", world.corpus) is None
    seen = world.people.loc[world.people["group"] != "unseen", "subject"]
    assert all(re.search(rf"\b{name}\b", world.corpus) for name in seen)


@pytest.mark.parametrize("kind", ["popular", "nobody"])
def test_default_noise_rate(kind):
    w = build_world(WorldConfig(seed=5, default_noise=0.2, default_kind=kind, **TINY))
    truth = {(f.subject, f.relation): f.object for f in w.facts.itertuples(index=False)}
    lines = _qa_lines(w.corpus)
    eligible = [(s, r, a) for s, r, a in lines if truth[s, r] != w.defaults[r]]
    noisy = [x for x in eligible if x[2] == w.defaults[x[1]]]
    wrong = [x for x in lines if x[2] != truth[x[0], x[1]]]
    assert noisy == wrong  # every wrong answer is the default
    rate = len(noisy) / len(eligible)
    assert abs(rate - 0.2) < 3 * math.sqrt(0.2 * 0.8 / len(eligible))
    assert w.facts["qa_default_lines"].sum() == len(noisy)
    if kind == "nobody":
        owned = set(w.facts["object"])
        assert all(d not in owned for d in w.defaults.values())
        assert len(eligible) == len(lines)
    else:
        counts = w.facts.groupby("relation")["object"].agg(lambda s: s.value_counts().max())
        for r, d in w.defaults.items():
            assert (w.facts.loc[w.facts["relation"] == r, "object"] == d).sum() == counts[r]


def test_no_noise_means_every_qa_line_is_right():
    w = build_world(WorldConfig(seed=1, default_noise=0.0, **TINY))
    truth = {(f.subject, f.relation): f.object for f in w.facts.itertuples(index=False)}
    assert all(a == truth[s, r] for s, r, a in _qa_lines(w.corpus))


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        (dict(qa_share=0.95, unseen_share=0.1), "qa_share"),
        (dict(default_kind="often"), "default_kind"),
        (dict(relations=("birth_city", "shoe_size")), "relations"),
        (dict(n_paraphrases=9), "n_paraphrases"),
        (dict(n_values=1), "n_values"),
    ],
)
def test_config_rejects_bad_values(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        WorldConfig(**kwargs)
    with pytest.raises(ValueError, match="unknown WorldConfig setting"):
        WorldConfig.from_dict({"n_peple": 3})


def test_tokenizer_round_trips_the_corpus(world, tokenizer):
    unk = tokenizer.unk_token_id
    for line in world.corpus.split("\n"):
        ids = tokenizer.encode(line, add_special_tokens=False)
        assert unk not in ids
        assert tokenizer.decode(ids) == line
    ids = tokenizer.encode(world.corpus)
    assert tokenizer.decode(ids) == world.corpus
    assert tokenizer.bos_token is None and ids[0] != tokenizer.eos_token_id
    nl = tokenizer.convert_tokens_to_ids("\n")
    assert tokenizer.encode("\n") == [nl]
    assert pre_tokenize("Q: Where was Bo born?\nA: Ka\n") == [
        "Q", ":", "▁Where", "▁was", "▁Bo", "▁born", "?", "\n", "A", ":", "▁Ka", "\n"
    ]


def test_prompt_answer_split(world, tokenizer):
    enc = lambda text: tokenizer.encode(text, add_special_tokens=False)  # noqa: E731
    nl = tokenizer.convert_tokens_to_ids("\n")
    for fact in world.facts.itertuples(index=False):  # unseen people and unused values included
        prompt = f"Q: {fact.question}\nA:"
        p, full = enc(prompt), enc(f"{prompt} {fact.object}\n")
        assert full[: len(p)] == p
        answer = full[len(p):]
        assert len(answer) == 2 and answer[1] == nl
        assert tokenizer.unk_token_id not in full
        assert tokenizer.decode(answer) == f" {fact.object}\n"
        assert len(enc(f" {fact.subject}")) == 1


def test_saved_tokenizer_reloads(world, tokenizer, tmp_path: Path):
    tokenizer.save_pretrained(str(tmp_path))
    again = load_tokenizer(tmp_path)
    text = world.corpus[:2000]
    assert again.encode(text) == tokenizer.encode(text)
    assert (again.eos_token, again.pad_token, again.unk_token) == ("<eos>", "<pad>", "<unk>")
    assert split_documents("a\n\nb\nc\n") == ["a\n", "b\nc\n"]
