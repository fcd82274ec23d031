"""``massshift study countries --model M``: the paper's study on a real model and real facts, on a CPU.

Any checkpoint ``load_model`` takes (default SmolLM2-135M-Instruct, ``"smollm2-135m"``, offline; the name
``smollm2-countries`` is an alias) on one-hop country facts
(``data.countries.country_facts``). Stages, each reused when its settings are unchanged
(``pipeline.run_stage``), all under one run directory ``OUT``:

1. ``split/``: a fact-level split (``data.split.split_facts``) into test facts and the rest, and from
   the rest a validation split; ``n_test``, ``n_val`` and ``n_train`` facts are kept (seeded);
2. ``selection.csv``, ``choice.json``: the prompt format and matching mode, chosen on the
   validation facts only by the base model's greedy accuracy (ties: the earlier candidate, so
   ``exact`` before ``contains`` and no prefix before a prefix):
   the plain ``Q:/A:`` template or the chat template with a one-line instruction, each with
   and without per-relation answer prefixes (``lm.prefill``, frozen into
   ``PromptConfig.question_prefixes`` so trainers see them), matched ``exact`` or ``contains``;
3. ``scores/base.parquet``: base scores on the test facts (samples, distractors);
4. ``grpo/``, ``sft/``, ``rft/``, ``dpo/``: GRPO on the train facts and the SFT, RFT and DPO
   baselines with the same budget (the same train facts, optimizer steps and questions per step;
   DPO's pairs are the base model's own samples, a correct against an incorrect answer); the reward
   (RFT's and DPO's verdict) is the chosen matching with the anti-hedging rule (an answer naming
   another value of the relation is wrong) under ``contains``;
5. ``compare-<method>/``: ``report.compare.write_compare_report`` of each trained model against the
   base on the test facts;
6. ``results.csv`` / ``results.md``: held-out greedy accuracy of every method with bootstrap CIs
   and the relative gain over the base's greedy accuracy, with majority vote, k-shot and
   chain-of-thought prompting of the base and the constant answer (``pipeline.method_results``),
   like the paper's main table;
7. ``summary.json``: sizes, the choice, timings, the GRPO transition matrix and redistribution.

Hyper-parameters that were not tuned (the learning rates, steps, LoRA or full fine-tuning)
are fixed in ``StudyConfig`` and written to ``config.yaml``; nothing is ever chosen on the
test facts. Results and how the study was run: docs/country-study.md.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from massshift.configio import help_field
from massshift.data.matching import contains_reward, relation_values
from massshift.rundir import init_run_dir, write_csv, write_json, write_parquet, write_text
from massshift.studies.pipeline import Stages, config_key, headline, method_results
from massshift.studies.results import results_markdown, with_relative_gain

logger = logging.getLogger(__name__)

STUDIES = ("countries", "smollm2-countries")  # the second: the first name, kept as an alias
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


def _grpo(quick: bool) -> Any:
    from massshift.train.grpo import GRPOConfig

    # 16 steps x 4 questions: each of the 64 train facts once; lr 2e-5, full fine-tuning, not tuned
    # (docs/country-study.md says why)
    return GRPOConfig(steps=4 if quick else 16, batch_size=4, num_generations=4, lr=2e-5, max_new_tokens=12,
                      save_every=0, eval_every=0)


def _sft() -> Any:
    from massshift.train.sft import SFTConfig

    return SFTConfig(epochs=1, batch_size=4, lr=2e-5, max_new_tokens=12)


def _rft() -> Any:
    from massshift.train.rft import RFTConfig

    return RFTConfig(epochs=1, batch_size=4, lr=2e-5, max_new_tokens=12, n_samples=4)


def _dpo(steps: int) -> Any:
    from massshift.train.dpo import DPOConfig

    return DPOConfig(steps=steps, batch_size=4, lr=2e-5, max_new_tokens=12, n_samples=4)


@dataclass(frozen=True)
class StudyConfig:
    """Settings of the study (written to OUT/config.yaml); ``quick`` shrinks the default sizes, and the
    trainers' seed and threads are the study's."""

    name: str = help_field("countries", help=f"The study ({', '.join(STUDIES)}).")
    seed: int = help_field(0, help="One seed for the split, sampling and training.")
    quick: bool = help_field(False, help="Tiny sizes and runs (for the tests; a few minutes on one thread).")
    model: str = help_field("smollm2-135m", help="The checkpoint studied (a load_model spec).")
    n_test: int = help_field(80, help="Held-out test facts kept after the split (quick: 24).")
    n_val: int = help_field(32, help="Validation facts, on which the prompt and matching are chosen (quick: 16).")
    n_train: int = help_field(64, help="RL-train facts, shared by GRPO, SFT and RFT (quick: 16).")
    n_samples: int = help_field(6, help="Samples per test fact when scoring, and majority-vote votes (quick: 4).")
    distractors: int = help_field(10, help="Values of the same relation scored per test fact, for the chance "
                                           "criterion (quick: 5).")
    max_new_tokens: int = help_field(16, help="Longest generated answer when scoring and choosing the prompt.")
    grpo: Any = help_field(None, help="The GRPOConfig (None: the study's; one pass over the train facts).")
    sft: Any = help_field(None, help="The SFTConfig (None: the study's, with GRPO's budget).")
    rft: Any = help_field(None, help="The RFTConfig (None: the study's, with GRPO's budget).")
    dpo: Any = help_field(None, help="The DPOConfig (None: the study's, GRPO's optimizer steps over the pairs).")
    threads: int | None = help_field(None, help="Torch CPU threads (None: the cores not already busy).")
    base_only: bool = help_field(False, help=(
        "Stop after choosing the prompt and scoring the base model (a second model family where the CPU "
        "budget allows no training)."))

    def __post_init__(self) -> None:
        if self.name not in STUDIES:
            raise ValueError(f"unknown study {self.name!r}; known: {', '.join(STUDIES)}")
        if self.quick and (self.n_test, self.n_val, self.n_train) == (80, 32, 64):
            object.__setattr__(self, "n_test", 24)
            object.__setattr__(self, "n_val", 16)
            object.__setattr__(self, "n_train", 16)
            object.__setattr__(self, "n_samples", 4)
            object.__setattr__(self, "distractors", 5)
        for f in ("n_test", "n_val", "n_train", "n_samples"):
            if getattr(self, f) < 1:
                raise ValueError(f"StudyConfig.{f} must be >= 1, got {getattr(self, f)}")
        q = self.quick
        object.__setattr__(self, "grpo", replace(self.grpo or _grpo(q), seed=self.seed, threads=self.threads))
        object.__setattr__(self, "sft", replace(self.sft or _sft(), seed=self.seed, threads=self.threads))
        object.__setattr__(self, "rft", replace(self.rft or _rft(), seed=self.seed, threads=self.threads))
        object.__setattr__(self, "dpo", replace(self.dpo or _dpo(self.grpo.steps), seed=self.seed, threads=self.threads))


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


def run_study(out: str | Path, config: StudyConfig | None = None, progress: bool = False) -> dict[str, Any]:
    """Run the study into ``out``; returns the summary (also written to ``summary.json``)."""
    from massshift.data.countries import country_facts
    from massshift.lm.loading import load_model
    from massshift.lm.runtime import set_threads

    cfg = config or StudyConfig()
    out = Path(out)
    stages = Stages(out)
    threads = set_threads(cfg.threads)
    init_run_dir(out, {"command": "study", "study": cfg, "threads": threads}, seed=cfg.seed, device="cpu")
    facts = country_facts()
    (train, val, test), k_split = _split(stages, cfg, facts)
    everything = pd.concat([train, val, test], ignore_index=True)
    model, tok, info = load_model(cfg.model)
    with stages.timed("selection"):
        choice = _choice(out, model, tok, val, cfg, k_split)
    prompt = dict(prompt_candidates(everything))[choice["prompt"]]
    mode = choice["match"]
    logger.info("chosen on validation: %s (accuracy %.3f)", choice["candidate"], choice["val_accuracy"])
    score_cfg = _score_config(cfg, prompt, mode, cfg.n_samples, cfg.distractors)
    with stages.timed("score_base"):
        scores = {"base": _score(out, test, score_cfg, model, tok, info.cache_key, "base")}
    del model
    head = {"study": cfg.name, "model": cfg.model, "seed": cfg.seed, "threads": threads,
            "timings_s": stages.timings,
            "n_facts": {"pool": len(facts), "train": len(train), "val": len(val), "test": len(test)},
            "choice": {k: v for k, v in choice.items() if k != "key"}}
    if cfg.base_only:
        return _base_only_summary(out, cfg, stages, head, scores["base"])
    for name, (fn, tcfg, extra) in _trainers(cfg, mode, everything).items():
        key = config_key([k_split, info.cache_key, choice["candidate"], mode, tcfg, name])

        def do_train(d: Path, fn: Any = fn, tcfg: Any = tcfg, extra: Any = extra) -> None:
            m, tk, _ = load_model(cfg.model)
            m.train()
            fn(m, tk, train, d, tcfg, eval_facts=val, prompt=prompt, progress=progress, **extra)

        run_dir = stages.run(name, key, do_train)
        with stages.timed(f"score_{name}"):
            m, tk, inf = load_model(str(run_dir / "final"))
            scores[name] = _score(out, test, score_cfg, m, tk, inf.cache_key, name)
            del m
    for name, table in scores.items():
        write_parquet(out / "scores" / f"{name}.parquet", table)
    with stages.timed("compare"):
        summaries = {name: _compare(out, cfg, scores["base"], scores[name], name, train, score_cfg)
                     for name in scores if name != "base"}
    with stages.timed("baselines"):
        results = _results(cfg, train, test, scores, mode, prompt)
        write_csv(out / "results.csv", results)
    stages.finish()
    g = summaries["grpo"]
    summary = head | {
        "results": results.to_dict(orient="records"),
        "headline": {name: headline(s) for name, s in summaries.items()},
        "grpo_transitions": g["transitions"], "grpo_redistribution": g["redistribution"],
        "formats": {name: s.get("formats") for name, s in summaries.items()},
    }
    write_json(out / "summary.json", summary)
    write_text(out / "results.md", results_markdown(summary))
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


def _trainers(cfg: StudyConfig, mode: str, everything: pd.DataFrame) -> dict[str, tuple[Any, Any, dict[str, Any]]]:
    """name -> (trainer, its config under the chosen matching, its extra arguments); under ``contains`` the
    reward and RFT's matcher carry the anti-hedging rule."""
    from massshift.train.dpo import train_dpo
    from massshift.train.grpo import train_grpo
    from massshift.train.rft import train_rft
    from massshift.train.sft import train_sft

    reward = contains_reward(relation_values(everything)) if mode == "contains" else None
    verdict = (lambda t, a: reward(t, a) > 0) if reward else None
    return {
        "grpo": (train_grpo, replace(cfg.grpo, match_mode=mode), {"reward_fn": reward}),
        "sft": (train_sft, replace(cfg.sft, match_mode=mode), {}),
        "rft": (train_rft, replace(cfg.rft, match_mode=mode), {"matcher": verdict}),
        "dpo": (train_dpo, replace(cfg.dpo, match_mode=mode), {"matcher": verdict}),
    }


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
             mode: str, prompt: Any) -> pd.DataFrame:
    """The main table: every method's held-out accuracy with CIs and its gain over the base's greedy accuracy."""
    from massshift.studies.baselines import BaselineConfig

    bcfg = BaselineConfig(methods=("majority", "kshot", "cot"), n_samples=cfg.n_samples,
                          max_new_tokens=cfg.max_new_tokens, shots=3, cot_tokens=32 if cfg.quick else 128,
                          seed=cfg.seed, match_mode=mode)
    labels = {"base": "base, zero-shot greedy", "grpo": "GRPO", "sft": "SFT", "rft": "RFT", "dpo": "DPO"}
    results = method_results(cfg.model, train, test, {labels[k]: v for k, v in scores.items()}, bcfg, prompt)
    return with_relative_gain(results, labels["base"])


def _base_only_summary(out: Path, cfg: StudyConfig, stages: Stages, head: dict[str, Any],
                       base_scores: pd.DataFrame) -> dict[str, Any]:
    from massshift.analysis.states import StateConfig, assign_states
    from massshift.score.formats import format_summary
    from massshift.studies.baselines import accuracy_table

    write_parquet(out / "scores" / "base.parquet", base_scores)
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
