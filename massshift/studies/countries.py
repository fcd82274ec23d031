"""``massshift study countries --model M``: the paper's study on a real model and real facts, on a CPU.

Any checkpoint ``load_model`` takes (default SmolLM2-135M-Instruct, ``"smollm2-135m"``, offline; the name
``smollm2-countries`` is an alias) on one-hop country facts (``data.countries.country_facts``) or on the
fact files of ``StudyConfig.facts`` (PopQA's parquet, say), at one of the sizes of ``study_config``.
Stages, each reused when its settings are unchanged (``pipeline.run_stage``), all under one run
directory ``OUT``:

1. ``split/``: a fact-level split (``data.split.split_facts``) into test facts and the rest, and from
   the rest a validation split; ``n_test``, ``n_val`` and ``n_train`` facts are kept (seeded);
2. ``selection.csv``, ``choice.json``: the prompt format and matching mode, chosen on the
   validation facts only by the base model's greedy accuracy (ties: the earlier candidate, so
   ``exact`` before ``contains`` and no prefix before a prefix):
   the plain ``Q:/A:`` template or the chat template with a one-line instruction, each with
   and without per-relation answer prefixes (``lm.prefill``, frozen into
   ``PromptConfig.question_prefixes`` so trainers see them), matched ``exact`` or ``contains``;
3. ``scores/base.parquet``: base scores on the test facts (samples, distractors);
4. ``grpo*/``, ``sft*/``, ``rft*/``, ``dpo*/``, ``lr_selection.csv``: GRPO on the train facts and the
   SFT, RFT and DPO baselines with the same budget (the same train facts, optimizer steps and questions
   per step; DPO's pairs are the base model's own samples, a correct against an incorrect answer), each
   learning rate of the grid chosen on validation, GRPO's extra seeds (``study_train``); the reward
   (RFT's and DPO's verdict) is the chosen matching with the anti-hedging rule (an answer naming
   another value of the relation is wrong) under ``contains``;
5. ``compare-<method>/``: ``report.compare.write_compare_report`` of each trained model against the
   base on the test facts;
6. ``results.csv`` / ``results.md``: held-out greedy accuracy of every method with bootstrap CIs
   and the relative gain over the base's greedy accuracy, with majority vote, k-shot and
   chain-of-thought prompting of the base and the constant answer (``pipeline.method_correct``),
   like the paper's main table; ``results_by_relation.csv`` and the per-relation table of results.md;
7. ``summary.json``: sizes, the choice, the learning rates chosen, GRPO's spread over seeds, timings,
   the GRPO transition matrix and redistribution.

Hyper-parameters that are not tuned (steps, LoRA or full fine-tuning, and the learning rates of the
sizes without a grid) are fixed by the size and written to ``config.yaml``; nothing is ever chosen on
the test facts. Results and how the study was run: docs/country-study.md.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd

from massshift.data.controls import split_controls, with_controls
from massshift.rundir import init_run_dir, write_csv, write_json, write_parquet, write_text
from massshift.studies.pipeline import Stages, config_key, headline
from massshift.studies.results import relation_markdown, results_markdown, with_relative_gain
from massshift.studies.study_config import STUDIES, StudyConfig  # noqa: F401  (the study's public names)
from massshift.studies.study_train import method_label, seed_spread, train_methods

logger = logging.getLogger(__name__)

RELATION_PREFIXES = {
    "capital": "The capital of {subject} is",
    "currency": "The currency of {subject} is the",
    "official_language": "The official language of {subject} is",
    "region": "{subject} is in",
    "subregion": "{subject} is in the subregion of",
}
INSTRUCTION = "Answer with the name only."
SYSTEM = "Answer briefly."


CHOICE_VERSION = "v1"
"""Part of the prompt-choice stage's reuse key: bump it when the candidate prompts or the choice rule change,
so that a rerun does not reuse a choice made by another rule (the runs committed under figures/ used v1)."""


# --- stages ---------------------------------------------------------------------------------------


def split_study_facts(facts: pd.DataFrame, cfg: StudyConfig) -> dict[str, pd.DataFrame]:
    """Fact-level split into test / validation / train, then seeded subsets of the sizes asked for."""
    from massshift.data.split import split_facts, verify_disjoint

    n = len(facts)
    # a little more than asked on each side (overlap groups move whole), then seeded subsets
    first = split_facts(facts, test_size=min(0.5, 1.2 * cfg.n_test / n), seed=cfg.seed)
    rest = first.train
    second = split_facts(rest, test_size=min(0.5, 1.2 * cfg.n_val / len(rest)), seed=cfg.seed + 1)
    parts = {"test": first.test, "val": second.test, "train": second.train}
    sizes = {"test": cfg.n_test, "val": cfg.n_val, "train": cfg.n_train}
    out = {}
    for name, df in parts.items():
        if len(df) < sizes[name]:
            raise ValueError(f"the {name} split has {len(df)} facts, fewer than the {sizes[name]} asked for")
        out[name] = df.sample(n=sizes[name], random_state=cfg.seed).sort_index().reset_index(drop=True)
    for a, b in (("train", "test"), ("val", "test"), ("train", "val")):
        overlaps = verify_disjoint(out[a], out[b])
        if overlaps:
            raise AssertionError(f"{a} and {b} overlap: {overlaps[:3]}")
    return out


def prompt_candidates(facts: pd.DataFrame) -> list[tuple[str, Any]]:
    """(name, PromptConfig) candidates, in order of preference on ties; each is tried with both match modes."""
    from massshift.lm.prompts import PromptConfig

    prefixes = tuple(
        (q, RELATION_PREFIXES[r].format(subject=s)) for q, s, r in
        zip(facts["question"], facts["subject"], facts["relation"]) if r in RELATION_PREFIXES)
    plain = PromptConfig()
    chat = PromptConfig(chat=True, system=SYSTEM, instruction=INSTRUCTION)
    if not prefixes:  # no relation of the facts has a prefix: the prefix candidates would repeat the others
        return [("plain", plain), ("chat", chat)]
    return [("plain", plain), ("chat", chat), ("plain+prefix", replace(plain, question_prefixes=prefixes)),
            ("chat+prefix", replace(chat, question_prefixes=prefixes))]


def _score_config(cfg: StudyConfig, prompt: Any, mode: str, n_samples: int, distractors: int) -> Any:
    from massshift.data.matching import MatchConfig
    from massshift.lm.sampling import GenerationConfig
    from massshift.score.table import ScoreConfig

    return ScoreConfig(prompt=prompt, match=MatchConfig(mode=mode),
                       generation=GenerationConfig(n_samples=n_samples, max_new_tokens=cfg.max_new_tokens,
                                                   seed=cfg.seed), distractors=distractors)


def choose_prompt(model: Any, tok: Any, val: pd.DataFrame, cfg: StudyConfig) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Greedy accuracy of the base model on the validation facts under each candidate prompt and match
    mode (one greedy pass per prompt, judged both ways); the best wins, ties to the earlier candidate."""
    from massshift.analysis.states import StateConfig
    from massshift.data.matching import is_correct
    from massshift.score.formats import format_summary
    from massshift.score.table import score_facts

    rows = []
    for name, prompt in prompt_candidates(val):
        if prompt.chat and not getattr(tok, "chat_template", None):
            logger.info("candidate %s skipped: the tokenizer has no chat template", name)
            continue
        table = score_facts(model, tok, val, _score_config(cfg, prompt, "contains", 0, min(cfg.distractors, 5)),
                            label="base")
        fmt = format_summary(table, StateConfig().threshold)
        exact = [is_correct(g, list(a)) for g, a in zip(table["greedy"], table["answers"])]
        for mode, correct in (("exact", exact), ("contains", list(table["greedy_correct"]))):
            rows.append({"candidate": f"{name}/{mode}", "prompt": name, "match": mode,
                         "val_accuracy": float(pd.Series(correct, dtype=float).mean()),
                         "greedy_bare": fmt["greedy"]["bare"], "greedy_sentence": fmt["greedy"]["sentence"],
                         "median_p_gold_greedy_correct": fmt["median_p_gold_greedy_correct"],
                         "format_warning": bool(fmt.get("warning"))})
            logger.info("candidate %s: validation greedy accuracy %.3f", rows[-1]["candidate"], rows[-1]["val_accuracy"])
    sel = pd.DataFrame(rows)
    best = int(sel["val_accuracy"].to_numpy().argmax())  # first maximum: earlier candidates win ties
    choice = {"candidate": str(sel["candidate"].iloc[best]), "prompt": str(sel["prompt"].iloc[best]),
              "match": str(sel["match"].iloc[best]), "val_accuracy": float(sel["val_accuracy"].iloc[best]),
              "rule": "highest base greedy accuracy on the validation facts; ties go to the earlier candidate",
              "n_val": len(val)}
    return sel, choice


def study_facts(cfg: StudyConfig) -> pd.DataFrame:
    """The pool the study splits: ``cfg.facts`` joined (fact ids must be unique across them), or the built-in
    country facts."""
    if not cfg.facts:
        from massshift.data.countries import country_facts

        return country_facts()
    from massshift.data.facts import load_facts

    facts = pd.concat([load_facts(f) for f in cfg.facts], ignore_index=True)
    dup = facts["fact_id"][facts["fact_id"].duplicated()]
    if len(dup):
        raise ValueError(f"fact ids repeat across {', '.join(cfg.facts)} (e.g. {dup.iloc[0]!r}); give each file "
                         "its own ids")
    if "relation" not in facts or facts["relation"].isna().all():
        raise ValueError(f"{', '.join(cfg.facts)}: the study needs a relation per fact (per-relation tables, the "
                         "constant-answer baseline, distractors)")
    return facts


def run_study(out: str | Path, config: StudyConfig | None = None, progress: bool = False) -> dict[str, Any]:
    """Run the study into ``out``; returns the summary (also written to ``summary.json``)."""
    from massshift.lm.loading import load_model
    from massshift.lm.runtime import set_threads

    cfg = config or StudyConfig()
    out = Path(out)
    stages = Stages(out)
    threads = set_threads(cfg.threads)
    init_run_dir(out, {"command": "study", "study": cfg, "threads": threads}, seed=cfg.seed, device="cpu")
    facts = study_facts(cfg)
    (train, val, test), k_split = _split(stages, cfg, facts)
    everything = pd.concat([train, val, test], ignore_index=True)
    model, tok, info = load_model(cfg.model)
    with stages.timed("selection"):
        choice = _choice(out, model, tok, val, cfg, k_split)
    scored = with_controls(test, cfg.controls, cfg.seed)  # the never-seen controls ride along with the test facts
    controls = split_controls(scored)[1]
    prompt = dict(prompt_candidates(pd.concat([everything, controls], ignore_index=True)))[choice["prompt"]]
    mode = choice["match"]
    logger.info("chosen on validation: %s (accuracy %.3f)", choice["candidate"], choice["val_accuracy"])
    score_cfg = _score_config(cfg, prompt, mode, cfg.n_samples, cfg.distractors)
    with stages.timed("score_base"):
        scores = {"base": _score(out, scored, score_cfg, model, tok, info.cache_key, "base")}
    del model
    head = {"study": cfg.name, "model": cfg.model, "seed": cfg.seed, "threads": threads,
            "timings_s": stages.timings,
            "n_facts": {"pool": len(facts), "train": len(train), "val": len(val), "test": len(test),
                        "controls": len(controls)},
            "choice": {k: v for k, v in choice.items() if k != "key"}}
    if cfg.base_only:
        return _base_only_summary(out, cfg, stages, head, scores["base"])
    dirs, selection = train_methods(stages, cfg, mode, everything, train, val, prompt,
                                    [k_split, info.cache_key, choice["candidate"]], progress)
    write_csv(out / "lr_selection.csv", selection)
    for name, run_dir in dirs.items():
        with stages.timed(f"score_{name}"):
            m, tk, inf = load_model(str(run_dir / "final"))
            scores[name] = _score(out, scored, score_cfg, m, tk, inf.cache_key, name)
            del m
    for name, table in scores.items():
        write_parquet(out / "scores" / f"{name}.parquet", table)
    with stages.timed("compare"):
        summaries = {name: _compare(out, cfg, scores["base"], scores[name], name, train, score_cfg)
                     for name in scores if name != "base"}
    with stages.timed("baselines"):
        results, by_relation = _results(cfg, train, test, scores, mode, prompt)
        write_csv(out / "results.csv", results)
        write_csv(out / "results_by_relation.csv", by_relation)
    stages.finish()
    g = summaries["grpo"]
    summary = head | {
        "results": results.to_dict(orient="records"),
        "results_by_relation": by_relation.to_dict(orient="records"),
        "lr_selection": selection.to_dict(orient="records"),
        "grpo_seeds": seed_spread(results, "base, zero-shot greedy"),
        "headline": {name: headline(s) for name, s in summaries.items()},
        "grpo_transitions": g["transitions"], "grpo_redistribution": g["redistribution"],
        "formats": {name: s.get("formats") for name, s in summaries.items()},
    }
    write_json(out / "summary.json", summary)
    write_text(out / "results.md", results_markdown(summary) + relation_markdown(by_relation))
    return summary


def _split(stages: Stages, cfg: StudyConfig, facts: pd.DataFrame) -> tuple[list[pd.DataFrame], str]:
    """The split stage: [train, val, test] facts and the stage's key."""
    from massshift.data.facts import load_facts, save_facts

    # the facts' content is in the key: a changed alias table must not reuse a stale split
    key = config_key([facts[["fact_id", "question", "answers"]].to_dict("records"), cfg.seed, cfg.n_test,
                      cfg.n_val, cfg.n_train])

    def do_split(d: Path) -> None:
        parts = split_study_facts(facts, cfg)
        for name, df in parts.items():
            save_facts(df, d / f"{name}.jsonl")
        write_json(d / "sizes.json", {name: len(df) for name, df in parts.items()} | {"pool": len(facts)})

    split_dir = stages.run("split", key, do_split)
    return [load_facts(split_dir / f"{n}.jsonl") for n in ("train", "val", "test")], key


def _choice(out: Path, model: Any, tok: Any, val: pd.DataFrame, cfg: StudyConfig, k_split: str) -> dict[str, Any]:
    """The prompt and matching chosen on the validation facts (``choose_prompt``), reused from
    ``choice.json`` when its key matches."""
    choice_path = out / "choice.json"
    key = config_key([k_split, cfg.model, cfg.max_new_tokens, cfg.seed, CHOICE_VERSION])
    if choice_path.exists() and (saved := json.loads(choice_path.read_text(encoding="utf-8"))).get("key") == key:
        return saved
    selection, choice = choose_prompt(model, tok, val, cfg)
    write_csv(out / "selection.csv", selection)
    choice["key"] = key
    write_json(choice_path, choice)
    return choice


def _score(out: Path, test: pd.DataFrame, score_cfg: Any, model: Any, tok: Any, key: str,
           label: str) -> pd.DataFrame:
    from massshift.score.table import score_facts

    return score_facts(model, tok, test, score_cfg, label=label, model_key=key, cache_dir=out / "cache")


def _compare(out: Path, cfg: StudyConfig, base: pd.DataFrame, trained: pd.DataFrame, name: str,
             train: pd.DataFrame, score_cfg: Any) -> dict[str, Any]:
    from massshift.analysis.estimators import StatsConfig
    from massshift.report.compare import CompareConfig, write_compare_report

    ccfg = CompareConfig(stats=StatsConfig(seed=cfg.seed), rl_label=name)
    return write_compare_report(
        base, trained, out / f"compare-{name}", ccfg,
        extra_config={"command": "study", "trained": name, "study_dir": str(out), "score": score_cfg},
        seed=cfg.seed, train_facts=train)


def _results(cfg: StudyConfig, train: pd.DataFrame, test: pd.DataFrame, scores: dict[str, pd.DataFrame],
             mode: str, prompt: Any) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The main table (every method's held-out accuracy with CIs and its gain over the base's greedy accuracy)
    and the same per relation."""
    from massshift.studies.baselines import BaselineConfig, accuracy_table
    from massshift.studies.pipeline import method_correct, relation_results

    bcfg = BaselineConfig(methods=("majority", "kshot", "cot"), n_samples=cfg.n_samples,
                          max_new_tokens=cfg.max_new_tokens, shots=3, cot_tokens=cfg.cot_tokens, seed=cfg.seed,
                          match_mode=mode)
    correct = method_correct(cfg.model, train, test, {method_label(k): v for k, v in scores.items()}, bcfg, prompt)
    results = accuracy_table(correct, n_boot=bcfg.n_boot, ci=bcfg.ci, seed=bcfg.seed)
    by_relation = relation_results(correct, test["relation"], bcfg) if "relation" in test else results.iloc[:0]
    return with_relative_gain(results, method_label("base")), by_relation


def _base_only_summary(out: Path, cfg: StudyConfig, stages: Stages, head: dict[str, Any],
                       base_scores: pd.DataFrame) -> dict[str, Any]:
    from massshift.analysis.states import StateConfig, assign_states
    from massshift.score.formats import format_summary
    from massshift.studies.baselines import accuracy_table

    write_parquet(out / "scores" / "base.parquet", base_scores)
    base_scores = split_controls(base_scores)[0]
    results = accuracy_table({"base, zero-shot greedy": base_scores["greedy_correct"]}, seed=cfg.seed)
    results["relative_gain"] = 0.0
    write_csv(out / "results.csv", results)
    stages.finish()
    summary = head | {"base_only": True, "results": results.to_dict(orient="records"),
                      "states": {str(k): int(v) for k, v in
                                 assign_states(base_scores, StateConfig()).value_counts().items()},
                      "formats": format_summary(base_scores, StateConfig().threshold)}
    write_json(out / "summary.json", summary)
    return summary
