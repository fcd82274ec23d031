"""Answer prefill (fixed, per relation, self), format diagnostics and the format-aware auto criterion."""

from __future__ import annotations

import copy
import json
import math

import pandas as pd
import pytest

from massshift.analysis.states import StateConfig, auto_criterion
from massshift.data.facts import facts_from_records
from massshift.data.matching import MatchConfig
from massshift.lm.prefill import PrefixSpecError, lead_in, load_prefix_spec
from massshift.lm.prompts import PromptConfig, build_prompt, encode_facts
from massshift.lm.sampling import GenerationConfig
from massshift.score.formats import classify, format_summary, format_warning
from massshift.score.table import ScoreConfig, _fact_matcher, _fold_ends, score_chunk

CUBA = "What is the capital of Cuba?"


def _chat(tokenizer):
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}<assistant>"
    return tok


def test_fixed_and_relation_prefix_placement_plain_and_chat(tokenizer, tmp_path):
    cfg = PromptConfig(answer_prefix="The capital of {subject} is")
    prefix = cfg.fact_prefix("Cuba", "capital")
    assert prefix == "The capital of Cuba is"
    assert build_prompt(CUBA, cfg, prefix=prefix) == "Q: What is the capital of Cuba?\nA: The capital of Cuba is"
    chat = PromptConfig(chat=True, instruction="Answer with the name only.", answer_prefix="The capital of {subject} is")
    text = build_prompt(CUBA, chat, _chat(tokenizer), prefix=chat.fact_prefix("Cuba", "capital"))
    assert text == "<user>Answer with the name only.\nWhat is the capital of Cuba?\n<assistant>The capital of Cuba is"
    path = tmp_path / "prefixes.yaml"
    path.write_text('capital: "The capital of {subject} is"\ndefault: "The answer is"\n', encoding="utf-8")
    kwargs = load_prefix_spec(f"@{path}")
    rel = PromptConfig(**kwargs)
    assert rel.fact_prefix("Peru", "capital") == "The capital of Peru is"
    assert rel.fact_prefix("Peru", "region") == "The answer is"  # the default covers other relations
    assert load_prefix_spec("self") == {"self_prefix": True} and load_prefix_spec("") == {}
    assert PromptConfig().scored_ends == ("\n",) and rel.scored_ends == ("\n", ".")


def test_prefix_spec_errors_name_file_and_key(tmp_path):
    with pytest.raises(PrefixSpecError, match="no such prefix file"):
        load_prefix_spec(f"@{tmp_path / 'missing.yaml'}")
    bad = tmp_path / "bad.yaml"
    bad.write_text('capital: "The capital of {country} is"\n', encoding="utf-8")
    with pytest.raises(PrefixSpecError, match=r"bad.yaml: key 'capital': unknown field"):
        load_prefix_spec(f"@{bad}")
    bad.write_text("- a list\n", encoding="utf-8")
    with pytest.raises(PrefixSpecError, match="mapping of relation"):
        load_prefix_spec(f"@{bad}")


def test_prefix_rows_per_end(tokenizer):
    cfg = PromptConfig(answer_prefix="The capital of Cuba is")
    items = encode_facts(tokenizer, [CUBA], [["Havana", "La Habana"]], cfg, prefixes=["The capital of Cuba is"])
    prompt_ids, conts = items[0]
    assert len(conts) == 4  # two aliases x (terminator, ".")
    assert tokenizer.decode(prompt_ids + conts[1]).endswith("The capital of Cuba is Havana.")
    assert tokenizer.decode(prompt_ids + conts[2]).endswith("The capital of Cuba is La Habana\n")
    assert _fold_ends([math.log(0.2), math.log(0.3), -math.inf, math.log(0.1)], 2) == pytest.approx(
        [math.log(0.5), math.log(0.1)])


@pytest.mark.parametrize(("text", "lead", "found"), [
    ("The capital of Cuba is Havana.", "The capital of Cuba is", True),
    ("Havana", "", True),
    ("Peru is in South America.", "Peru is in", True),  # the longest span at the earliest start
    ("The currency of Japan is the Japanese Yen (JPY).", "The currency of Japan is the", True),
    ("I think it is Santiago, not Havana.", "I think it is", True),  # a distractor comes first
    ("Cuba is an island in the Caribbean.", "", False),
    ("The capital is HAVANA", "The capital is", True),  # case-insensitive
    ("Havanas are cigars", "", False),  # word boundaries
])
def test_self_lead_in_extraction(text, lead, found):
    cands = ["Havana", "La Habana", "Santiago", "South America", "America", "Japanese Yen", "JPY"]
    assert lead_in(text, cands) == (lead, found)


@pytest.mark.parametrize(("answer", "fmt", "begins"), [
    ("Havana.", "bare", True),
    ("The capital of Cuba is Havana.", "sentence", False),
    ("", "empty", False),
    ("I don't know.", "hedge", False),
    ("Havana, Santiago or Madrid", "hedge", True),  # names several values
    ("100", "bare", False),  # short, but no candidate
    ("Cuba's capital city, which is in the west, is Havana", "sentence", False),
])
def test_classify(answer, fmt, begins):
    assert classify(answer, ["Havana"], ["Santiago", "Madrid"]) == (fmt, begins)


def _table(greedy, logp, prefix=None, distractors=True, n_samples=4):
    rows = []
    for i, (g, lp) in enumerate(zip(greedy, logp)):
        correct = "havana" in g.lower()
        row = {"fact_id": f"f{i}", "question": CUBA, "answers": ["Havana"], "model": "m", "greedy": g,
               "greedy_correct": correct, "logp_gold": lp, "logp_gold_per_token": lp, "best_alias": "Havana",
               "is_greedy": False, "n_samples": n_samples, "n_correct": 1 if correct else 0,
               "sample_answers": json.dumps({g.lower(): n_samples}), "answer_entropy": 0.0, "state": ""}
        if distractors:
            row.update({"distractors": ["Madrid"], "gold_rank": 1.0, "k_q": 1.0, "logp_best_distractor": -9.0,
                        "logp_median_distractor": -9.0, "n_distractors": 1})
        if prefix is not None:
            row["answer_prefix"] = prefix
        rows.append(row)
    return pd.DataFrame(rows)


def test_warning_and_auto_criterion():
    cfg = StateConfig()
    verbose = _table(["The capital of Cuba is Havana."] * 3 + ["Cuba is an island in the Caribbean."], [-8.0] * 4)
    summary = format_summary(verbose, cfg.threshold)
    assert summary["greedy"]["sentence"] == 1.0 and summary["greedy_begins_span"] == 0.0
    assert summary["median_p_gold_greedy_correct"] == pytest.approx(math.exp(-8.0))
    assert "0% of greedy answers are bare" in summary["warning"] and "--answer-prefix self" in summary["warning"]
    assert auto_criterion(cfg, verbose)[0] == "sampling"
    assert cfg.resolve(verbose).criterion == "sampling"
    bare = _table(["Havana."] * 3 + ["Madrid"], [-0.1] * 3 + [-5.0])
    assert format_warning(format_summary(bare, cfg.threshold), cfg.threshold) is None
    assert auto_criterion(cfg, bare)[0] == "chance"
    assert auto_criterion(cfg, _table(["Havana."] * 4, [-0.1] * 4, distractors=False))[0] == "logprob"
    # under a prefix, bare answers but p(gold) still below eps: chance (distractors) stays
    low = _table(["Havana."] * 4, [-9.0] * 4, prefix="The capital of Cuba is")
    crit, reason = auto_criterion(cfg, low)
    assert crit == "chance" and "answer prefix" in reason
    assert auto_criterion(cfg, _table(["Havana."] * 4, [-9.0] * 4, prefix="The capital of Cuba is",
                                      distractors=False))[0] == "sampling"


def test_anti_hedging_under_contains():
    match = _fact_matcher(MatchConfig(mode="contains").matcher(), ["Santiago", "Madrid"])
    assert match("The capital of Cuba is Havana.", ["Havana"])
    assert not match("Havana or Santiago", ["Havana"])
    exact = _fact_matcher(MatchConfig().matcher(), ["Santiago"])
    assert exact("Havana", ["Havana"]) and not exact("Havana or Santiago", ["Havana"])


def test_score_chunk_with_relation_and_self_prefix(tiny_model, tokenizer):
    facts = facts_from_records([
        {"question": "What is the capital of France?", "answers": ["Paris"], "subject": "France", "relation": "capital"},
        {"question": "What is the capital of Italy?", "answers": ["Rome"], "subject": "Italy", "relation": "capital"},
        {"question": "Who wrote Hamlet?", "answers": ["Shakespeare"], "subject": "Hamlet", "relation": "author"},
    ])
    prompt = PromptConfig(relation_prefixes=(("capital", "The capital of {subject} is"),))
    cfg = ScoreConfig(prompt=prompt, generation=GenerationConfig(n_samples=3, max_new_tokens=4), distractors=1)
    table = score_chunk(tiny_model, tokenizer, facts, cfg, "m", cfg.match.matcher())
    assert list(table["answer_prefix"]) == ["The capital of France is", "The capital of Italy is", ""]
    assert {"greedy_format", "greedy_begins_span", "sample_format_shares"} <= set(table.columns)
    assert table["logp_gold"].lt(0).all() and table["best_alias"].tolist() == ["Paris", "Rome", "Shakespeare"]
    assert table["distractors"].map(len).tolist() == [1, 1, 0]
    # p(gold) sums the two ends, so it exceeds the terminator-only score of the same prefix
    plain = ScoreConfig(prompt=PromptConfig(relation_prefixes=prompt.relation_prefixes, end_marks=()),
                        generation=cfg.generation, distractors=1)
    only_nl = score_chunk(tiny_model, tokenizer, facts, plain, "m", plain.match.matcher())
    assert (table["logp_gold"] > only_nl["logp_gold"]).all()
    selfcfg = ScoreConfig(prompt=PromptConfig(self_prefix=True), generation=cfg.generation, distractors=1)
    selft = score_chunk(tiny_model, tokenizer, facts, selfcfg, "m", selfcfg.match.matcher())
    assert "prefix_found" in selft.columns and selft["answer_prefix"].map(lambda p: isinstance(p, str)).all()


def test_question_prefixes_reach_every_prompt_builder(tokenizer):
    from massshift.train.common import prompt_ids_for

    cfg = PromptConfig(question_prefixes=((CUBA, "The capital of Cuba is"),))
    assert cfg.prefix_active and cfg.scored_ends == ("\n", ".")
    assert build_prompt(CUBA, cfg) == "Q: What is the capital of Cuba?\nA: The capital of Cuba is"
    assert build_prompt("Who wrote Hamlet?", cfg) == "Q: Who wrote Hamlet?\nA:"  # not listed: no prefix
    assert cfg.fact_prefix("Cuba", "capital", CUBA) == "The capital of Cuba is"
    ids = prompt_ids_for(tokenizer, [CUBA], cfg)[0]  # trainers and baselines see questions only
    assert tokenizer.decode(ids).endswith("A: The capital of Cuba is")
    other = PromptConfig(question_prefixes=((CUBA, "Cuba's capital is"),))
    assert cfg.to_dict()["question_prefixes"]["sha256"] != other.to_dict()["question_prefixes"]["sha256"]


def test_compare_report_states_formats_warning_and_criterion(tmp_path):
    from massshift.analysis.estimators import StatsConfig
    from massshift.report.compare import CompareConfig, write_compare_report

    base = _table(["The capital of Cuba is Havana."] * 2 + ["Cuba is an island in the Caribbean."] * 2, [-8.0] * 4)
    rl = _table(["Havana."] * 3 + ["Cuba is an island in the Caribbean."], [-8.0] * 3 + [-9.0])
    summary = write_compare_report(base, rl, tmp_path, CompareConfig(stats=StatsConfig(n_boot=50)), figures=False)
    assert summary["criterion"] == "sampling"
    fm = summary["formats"]
    assert fm["base"]["greedy"]["sentence"] == 1.0 and fm["rl"]["greedy"]["bare"] == 0.75
    assert fm["shift"]["greedy_bare"] == pytest.approx(0.75)
    text = (tmp_path / "report.md").read_text()
    assert "## Answer format" in text and "auto is sampling" in text and "**warning (base)**" in text
    assert "format shift base" in text and "knowledge shift: greedy accuracy +25.0 points" in text
