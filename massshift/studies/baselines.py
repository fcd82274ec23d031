"""Inference-time baselines: majority vote over samples, k-shot prompting and chain-of-thought prompting.

The paper compares RL with these (arXiv 2605.07153, "majority voting" and
prompting baselines). Both use massshift's one definition of correct
(``matching``) and its generation (seeded per (seed, fact_id)).

- **Majority vote** (``majority@n``): ``n`` samples per question; the answers
  are normalised (``matching.normalize``) and the most frequent normalised
  answer wins, ties going to the one seen first; the prediction is the first
  sample with that form. An empty answer is a vote like any other (and wrong).
- **k-shot** (``k-shot``): ``k`` (question, first alias) pairs drawn per test
  fact, seeded by (seed, fact_id), from the *train* facts only, in the prompt's
  own format (``PromptConfig.shots``); the greedy answer is scored. Train facts
  that share a fact id or a normalised question with any test fact are removed
  from the pool first (with a warning), and every drawn shot is checked again.
- **chain of thought** (``CoT``): the paper's inference-time reasoning baseline, in two greedy passes
  (zero-shot CoT, Kojima et al. 2022). First the question with ``COT_INSTRUCTION`` after it (in place of
  any ``instruction``, which usually asks for the name only) and the answer begun with ``COT_LEAD``; the
  model reasons for up to ``cot_tokens`` tokens, stopping at a blank line, its end of turn or EOS, and its
  text is cut before its first ``Answer:``. Then the same prompt, the lead, that reasoning and the marker
  ``\nAnswer:``: the greedy continuation up to the terminator is the prediction, judged like every other.
  ``reasoning`` and ``marker`` (whether the model wrote the marker itself) are in its rows.
- **greedy**: the zero-shot greedy answer, from the same generation call as the
  majority vote's samples; the reference row.

``run_baselines`` returns one row per (fact, method); ``accuracy_table`` turns
correctness columns into accuracies with seeded percentile-bootstrap intervals.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from massshift.configio import ConfigIO, help_field
from massshift.data.matching import MatchConfig, normalize
from massshift.lm.prompts import PromptConfig, build_prompt, encode_prompt, stop_texts
from massshift.lm.sampling import GenerationConfig, generate
from massshift.seeds import derive_seed
from massshift.train.common import check_facts, prompt_ids_for

logger = logging.getLogger(__name__)

METHODS = ("greedy", "majority", "kshot", "cot")
COT_INSTRUCTION = "Think step by step, then give the final answer on a last line that starts with 'Answer:'."
COT_LEAD = "Let's think step by step."
COT_MARKER = "Answer:"


@dataclass(frozen=True)
class BaselineConfig(ConfigIO):
    """Settings of ``run_baselines`` (every field maps onto a ``massshift baselines`` option)."""

    methods: tuple[str, ...] = help_field(METHODS, help=f"Any of {', '.join(METHODS)}.")
    n_samples: int = help_field(16, help="Samples per question for the majority vote.")
    temperature: float = help_field(1.0, help="Sampling temperature of the majority vote.")
    max_new_tokens: int = help_field(16, help="Most generated tokens per answer.")
    shots: int = help_field(5, help="k, the number of train examples in a k-shot prompt.")
    cot_tokens: int = help_field(128, help="Most reasoning tokens of the chain-of-thought baseline.")
    seed: int = help_field(0, help="Seeds the samples and the choice of shots.")
    match_mode: str = help_field("exact", help="exact or contains (massshift.data.matching).")
    max_words: int = help_field(12, help="Under contains, longer predictions are wrong.")
    n_boot: int = help_field(2000, help="Bootstrap resamples of the accuracy intervals.")
    ci: float = help_field(0.95, help="Confidence level of the intervals.")

    def __post_init__(self) -> None:
        methods = (self.methods,) if isinstance(self.methods, str) else tuple(self.methods)
        object.__setattr__(self, "methods", methods)
        checks = [
            (bool(methods) and all(m in METHODS for m in methods),
             f"methods must be a non-empty subset of {list(METHODS)}, got {list(methods)}"),
            (self.n_samples >= 1, f"n_samples must be >= 1 (the paper votes over many, e.g. 16), got {self.n_samples}"),
            (self.temperature >= 0, f"temperature must be >= 0, got {self.temperature}"),
            (self.max_new_tokens >= 1, f"max_new_tokens must be >= 1, got {self.max_new_tokens}"),
            (self.shots >= 1, f"shots must be >= 1 (k of k-shot), got {self.shots}"),
            (self.cot_tokens >= 1, f"cot_tokens must be >= 1 (e.g. 128), got {self.cot_tokens}"),
            (self.seed >= 0, f"seed must be >= 0, got {self.seed}"),
            (self.match_mode in ("exact", "contains"),
             f"match_mode must be 'exact' or 'contains', got {self.match_mode!r}"),
            (self.max_words >= 1, f"max_words must be >= 1, got {self.max_words}"),
            (self.n_boot >= 1, f"n_boot must be >= 1 (e.g. 2000), got {self.n_boot}"),
            (0 < self.ci < 1, f"ci must be in (0, 1) (e.g. 0.95), got {self.ci}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(f"BaselineConfig: {msg}")

    def matcher(self, terminator: str = "\n") -> Any:
        """The answer matcher with this config's settings."""
        return MatchConfig(mode=self.match_mode, max_words=self.max_words,  # type: ignore[arg-type]
                           terminator=terminator).matcher()


def majority_vote(samples: Sequence[str]) -> str:
    """The most frequent answer after normalisation (ties: first seen); returns its first raw form."""
    if not samples:
        return ""
    forms = [normalize(s) for s in samples]
    counts = Counter(forms)
    best = max(counts.values())
    winner = next(f for f in forms if counts[f] == best)  # first seen among the tied
    return samples[forms.index(winner)]


def shot_pool(train_facts: pd.DataFrame, test_facts: pd.DataFrame) -> pd.DataFrame:
    """Train facts usable as shots: none shares a fact id or a normalised question with a test fact."""
    test_ids = set(test_facts["fact_id"].astype(str))
    test_qs = {normalize(q) for q in test_facts["question"]}
    clash = train_facts["fact_id"].astype(str).isin(test_ids) | train_facts["question"].map(normalize).isin(test_qs)
    if clash.any():
        logger.warning("k-shot: %d train facts overlap the test facts (fact id or question) and are not used "
                       "as shots", int(clash.sum()))
    return train_facts[~clash].reset_index(drop=True)


def draw_shots(pool: pd.DataFrame, k: int, seed: int, fact_id: str) -> tuple[tuple[str, str], ...]:
    """``k`` (question, first alias) pairs from ``pool``, drawn without replacement, seeded by (seed, fact_id)."""
    if k > len(pool):
        raise ValueError(f"k-shot needs {k} shots but only {len(pool)} train facts are usable; lower shots")
    rng = np.random.default_rng(derive_seed(seed, "shots", fact_id))
    rows = rng.choice(len(pool), size=k, replace=False)
    return tuple((str(pool["question"].iloc[i]), str(pool["answers"].iloc[i][0])) for i in rows)


def _rows(facts: pd.DataFrame, method: str, predictions: Sequence[str], matcher: Any) -> list[dict[str, Any]]:
    return [{"fact_id": fid, "method": method, "prediction": p, "correct": bool(matcher(p, list(a)))}
            for fid, a, p in zip(facts["fact_id"], facts["answers"], predictions)]


def sample_baselines(model: torch.nn.Module, tokenizer: Any, facts: pd.DataFrame, config: BaselineConfig,
                     prompt: PromptConfig) -> pd.DataFrame:
    """Zero-shot greedy answers and majority votes over ``n_samples`` samples (one generation call)."""
    ids = prompt_ids_for(tokenizer, list(facts["question"]), prompt)
    gen_cfg = GenerationConfig(n_samples=config.n_samples, temperature=config.temperature,
                               max_new_tokens=config.max_new_tokens, seed=config.seed)
    gens = generate(model, ids, list(facts["fact_id"]), tokenizer, gen_cfg, prompt.terminator,
                    stops=stop_texts(prompt, tokenizer))
    matcher = config.matcher(prompt.terminator)
    rows = []
    if "greedy" in config.methods:
        rows += _rows(facts, "greedy", [g.greedy for g in gens], matcher)
    if "majority" in config.methods:
        rows += _rows(facts, f"majority@{config.n_samples}", [majority_vote(g.samples) for g in gens], matcher)
    return pd.DataFrame(rows)


def kshot_baseline(model: torch.nn.Module, tokenizer: Any, test_facts: pd.DataFrame, train_facts: pd.DataFrame,
                   config: BaselineConfig, prompt: PromptConfig) -> pd.DataFrame:
    """Greedy answers under k-shot prompts whose shots come from the train facts only."""
    pool = shot_pool(train_facts, test_facts)
    test_ids = set(test_facts["fact_id"])
    test_qs = {normalize(q) for q in test_facts["question"]}
    prompts = []
    for fid, q in zip(test_facts["fact_id"], test_facts["question"]):
        shots = draw_shots(pool, config.shots, config.seed, fid)
        assert not any(normalize(sq) in test_qs for sq, _ in shots), "a k-shot example is a test question"
        prompts.append(prompt_ids_for(tokenizer, [q], dataclasses.replace(prompt, shots=shots))[0])
    assert not set(pool["fact_id"]) & test_ids, "a k-shot example is a test fact"
    gens = generate(model, prompts, list(test_facts["fact_id"]), tokenizer,
                    GenerationConfig(n_samples=0, max_new_tokens=config.max_new_tokens), prompt.terminator,
                    stops=stop_texts(prompt, tokenizer))
    return pd.DataFrame(_rows(test_facts, f"{config.shots}-shot", [g.greedy for g in gens],
                              config.matcher(prompt.terminator)))


def cot_baseline(model: torch.nn.Module, tokenizer: Any, facts: pd.DataFrame, config: BaselineConfig,
                 prompt: PromptConfig) -> pd.DataFrame:
    """Zero-shot chain of thought (module docstring): reason, then answer after the marker."""
    cot = dataclasses.replace(prompt, instruction="", question_prefixes=())
    questions = [f"{q}\n{COT_INSTRUCTION}" for q in facts["question"]]
    ids = list(facts["fact_id"])
    stops = stop_texts(cot, tokenizer)
    first = [encode_prompt(tokenizer, build_prompt(q, cot, tokenizer, prefix=COT_LEAD), cot) for q in questions]
    thoughts = generate(model, first, ids, tokenizer, GenerationConfig(n_samples=0, max_new_tokens=config.cot_tokens),
                        "\n\n", stops=tuple(s for s in stops if s != cot.terminator))
    raw = [tokenizer.decode(g.greedy_ids, skip_special_tokens=True) for g in thoughts]
    for s in stops[1:]:
        raw = [t.split(s, 1)[0] for t in raw]
    thought = [t.split("\n\n", 1)[0] for t in raw]  # the reasoning ends at a blank line
    reasoning = [t.split(COT_MARKER, 1)[0].rstrip() for t in thought]
    second = [encode_prompt(tokenizer, build_prompt(q, cot, tokenizer, prefix=f"{COT_LEAD}{r}\n{COT_MARKER}"), cot)
              for q, r in zip(questions, reasoning)]
    answers = generate(model, second, ids, tokenizer, GenerationConfig(n_samples=0, max_new_tokens=config.max_new_tokens),
                       cot.terminator, stops=stops)
    rows = _rows(facts, "CoT", [g.greedy.strip().rstrip(".").strip() for g in answers], config.matcher(cot.terminator))
    for row, r, t in zip(rows, reasoning, thought):
        row.update(reasoning=r, marker=COT_MARKER in t)
    return pd.DataFrame(rows)


def run_baselines(model: torch.nn.Module, tokenizer: Any, test_facts: pd.DataFrame,
                  train_facts: pd.DataFrame | None = None, config: BaselineConfig | None = None,
                  prompt: PromptConfig | None = None) -> pd.DataFrame:
    """Every configured baseline on ``test_facts``: columns fact_id, method, prediction, correct."""
    config = config or BaselineConfig()
    prompt = prompt or PromptConfig()
    test = check_facts(test_facts, "test_facts")
    model.eval()
    parts = []
    if {"greedy", "majority"} & set(config.methods):
        parts.append(sample_baselines(model, tokenizer, test, config, prompt))
    if "kshot" in config.methods:
        if train_facts is None:
            raise ValueError("the k-shot baseline draws its shots from train_facts; pass them or drop 'kshot'")
        parts.append(kshot_baseline(model, tokenizer, test, check_facts(train_facts, "train_facts"), config, prompt))
    if "cot" in config.methods:
        parts.append(cot_baseline(model, tokenizer, test, config, prompt))
    return pd.concat(parts, ignore_index=True)


def accuracy_table(correct: Mapping[str, pd.Series | Sequence[bool]], n_boot: int = 2000, ci: float = 0.95,
                   seed: int = 0) -> pd.DataFrame:
    """Accuracy per method with a seeded percentile-bootstrap interval: method, accuracy, ci_low, ci_high, n.

    Every method's resamples come from the same seed, so methods scored on the same facts in the same
    order get the same resampled fact sets (a paired bootstrap).
    """
    tail = 100 * (1 - ci) / 2
    rows = []
    for method, values in correct.items():
        x = np.asarray(pd.Series(values).dropna(), dtype=float)
        if len(x) == 0:
            rows.append({"method": method, "accuracy": np.nan, "ci_low": np.nan, "ci_high": np.nan, "n": 0})
            continue
        rng = np.random.default_rng(seed)
        means = x[rng.integers(0, len(x), size=(n_boot, len(x)))].mean(axis=1)
        lo, hi = np.percentile(means, [tail, 100 - tail])
        rows.append({"method": method, "accuracy": float(x.mean()), "ci_low": float(lo), "ci_high": float(hi),
                     "n": len(x)})
    return pd.DataFrame(rows, columns=["method", "accuracy", "ci_low", "ci_high", "n"])


def baseline_accuracy(results: pd.DataFrame, config: BaselineConfig | None = None) -> pd.DataFrame:
    """``accuracy_table`` of a ``run_baselines`` frame, methods in their order of appearance."""
    config = config or BaselineConfig()
    groups = {m: results.loc[results["method"] == m, "correct"] for m in results["method"].unique()}
    return accuracy_table(groups, n_boot=config.n_boot, ci=config.ci, seed=config.seed)
