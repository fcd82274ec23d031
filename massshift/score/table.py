"""Building the score table of one model over a facts table, cached and resumable.

This is the expensive stage of the data flow: teacher forcing
(``scoring``) and greedy plus sampled answers (``generation``) for every fact,
judged by one matcher (``matching``), one row per fact (``schema``). Work is
split into chunks of facts; each finished chunk is written atomically to a
cache folder keyed by a fingerprint of everything that changes the numbers
(weights, tokenizer, prompt, matching, sampling, facts, and the drawn
distractors when ``ScoreConfig.distractors > 0``). An interrupted run
resumes from its finished chunks; a repeated run computes nothing. A missing
cache entry is computed and logged, never silently mixed with other settings.

Distractors (``massshift.score.distractors``) are drawn once over the whole facts
table and teacher-forced as extra continuations of each fact's prompt, in the
same batch as its aliases; the gold's numbers do not change with them.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from massshift.configio import help_field
from massshift.data.matching import MatchConfig, Matcher, is_correct, normalize
from massshift.lm.logprobs import AliasScores, ScoringConfig, score_items
from massshift.lm.prefill import self_prefixes
from massshift.lm.prompts import (
    PromptConfig,
    answer_ends,
    build_prompt,
    encode_facts,
    encode_prompt,
    stop_texts,
)
from massshift.lm.sampling import GenerationConfig, generate
from massshift.score.cache import (
    ChunkPlan,
    Shard,
    iter_chunks,
    merge_chunks,
    plan_chunks,
    pq_columns,
    wait_for_chunks,
    write_chunk,
)
from massshift.score.distractors import PRIOR_COLUMNS, ValuePrior, distractor_stats, draw_distractors
from massshift.score.formats import FORMAT_COLUMNS, FormatTally, format_columns
from massshift.score.schema import DISTRACTOR_COLUMNS, FACT_COLUMNS_OPTIONAL, SCORE_COLUMNS

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScoreConfig:
    """Everything that decides one model's score table."""

    prompt: PromptConfig = help_field(help="How questions become prompts.", default_factory=PromptConfig)
    match: MatchConfig = help_field(help="How answers are judged correct.", default_factory=MatchConfig)
    generation: GenerationConfig = help_field(help="Greedy decoding and sampling.", default_factory=GenerationConfig)
    scoring: ScoringConfig = help_field(help="Teacher-forcing batches (does not change numbers).",
                                        default_factory=ScoringConfig)
    chunk_size: int = help_field(64, help="Facts per cached chunk (progress is saved after each chunk).")
    distractors: int = help_field(0, help=(
        "Distractor answers scored per fact, drawn from the whole facts table (seeded by generation.seed) and "
        "scored on the gold answer's prompt pass (one continuation row each); 0 scores none."))

    def __post_init__(self) -> None:
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {self.chunk_size}")
        if isinstance(self.distractors, bool) or not isinstance(self.distractors, int) or self.distractors < 0:
            raise ValueError(
                f"ScoreConfig.distractors must be an integer >= 0 (0: none, 20 is a good default), "
                f"got {self.distractors!r}"
            )
        if self.match.terminator != self.prompt.terminator:
            raise ValueError(
                f"match.terminator {self.match.terminator!r} differs from prompt.terminator "
                f"{self.prompt.terminator!r}; answers are cut where the prompt's continuation ends"
            )

    def numbers_key(self) -> dict[str, Any]:
        """The settings that change the numbers (batching and chunking excluded).

        ``distractors`` appears only when > 0, so caches written before it existed stay valid.
        """
        gen = self.generation
        key = {
            "prompt": self.prompt.to_dict(),
            "match": {"mode": self.match.mode, "max_words": self.match.max_words},
            "generation": {"n_samples": gen.n_samples, "temperature": gen.temperature, "top_p": gen.top_p,
                           "max_new_tokens": gen.max_new_tokens, "seed": gen.seed},
        }
        if self.distractors:
            key["distractors"] = self.distractors
            if self.match.mode == "contains":  # answers naming a distractor are wrong (anti-hedging)
                key["match"]["anti_hedging"] = True
        return key


def answer_counts(answers: Sequence[str]) -> dict[str, int]:
    """Counts of distinct normalised answers, most frequent first (ties: first seen)."""
    counts = Counter(normalize(a) for a in answers)
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def entropy_nats(counts: dict[str, int]) -> float:
    """Entropy (nats) of an answer-count distribution; NaN for no answers."""
    total = sum(counts.values())
    if total == 0:
        return math.nan
    return -sum(c / total * math.log(c / total) for c in counts.values() if c)


def split_scores(scores: AliasScores, n_aliases: int) -> tuple[AliasScores, list[float]]:
    """Split one fact's scores into the gold aliases (the first ``n_aliases`` rows) and the distractors' log-probs."""
    gold = AliasScores(scores.alias_logps[:n_aliases], scores.token_logps[:n_aliases],
                       scores.alias_is_greedy[:n_aliases])
    return gold, [float(x) for x in scores.alias_logps[n_aliases:]]


def score_chunk(
    model: Any, tokenizer: Any, facts: pd.DataFrame, config: ScoreConfig, label: str,
    matcher: Matcher, on_facts: Callable[[float], None] | None = None,
    distractors: Sequence[Sequence[str]] | None = None,
) -> pd.DataFrame:
    """Score one chunk of facts: teacher forcing, then greedy and sampled answers.

    ``distractors`` (one list per fact, from ``draw_distractors`` over the whole
    facts table) are teacher-forced as extra continuations of the fact's prompt;
    when ``config.distractors > 0`` and none are given they are drawn from this
    chunk alone. Their columns (``DISTRACTOR_COLUMNS``) are written only then.
    """
    ids = [str(f) for f in facts["fact_id"]]
    questions = list(facts["question"])
    answers = [list(a) for a in facts["answers"]]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    if config.distractors and distractors is None:
        distractors = draw_distractors(facts, config.distractors, config.generation.seed)
    dis = [list(d) for d in distractors] if config.distractors and distractors is not None else None
    prefixes, found = _fact_prefixes(model, tokenizer, facts, config, ids, answers, dis)
    n_ends = len(answer_ends(config.prompt, tokenizer))  # rows per answer: one per end (answer_ends)
    conts = [a + d for a, d in zip(answers, dis)] if dis is not None else answers
    items = encode_facts(tokenizer, questions, conts, config.prompt, fact_ids=ids, prefixes=prefixes)
    half = (lambda n: on_facts(n / 2)) if on_facts else None
    tf_all = score_items(model, items, pad_id, config.scoring, on_batch=half)
    tf = [split_scores(s, len(a) * n_ends)[0] for s, a in zip(tf_all, answers)]
    prompts = [encode_prompt(tokenizer, build_prompt(q, config.prompt, tokenizer, None if prefixes is None else p),
                             config.prompt) for q, p in zip(questions, prefixes or questions)]
    gens = generate(model, prompts, ids, tokenizer, config.generation, config.prompt.terminator, on_batch=half,
                    stops=stop_texts(config.prompt, tokenizer))
    rows = []
    n = config.generation.n_samples
    for i, (fid, q, ans, s, g) in enumerate(zip(ids, questions, answers, tf, gens)):
        match = _fact_matcher(matcher, dis[i] if dis is not None else ())
        counts = answer_counts(g.samples)
        n_correct = sum(bool(match(a, ans)) for a in g.samples)
        best = s.best
        row = {
            "fact_id": fid, "question": q, "answers": ans, "model": label,
            "greedy": g.greedy, "greedy_correct": bool(match(g.greedy, ans)),
            "logp_gold": s.logp_gold, "logp_gold_per_token": s.logp_per_token,
            "best_alias": ans[best // n_ends], "is_greedy": s.is_greedy,
            "n_samples": n, "n_correct": n_correct,
            "sample_answers": json.dumps(counts, ensure_ascii=False),
            "answer_entropy": entropy_nats(counts),
            "token_logps": s.token_logps[best], "n_truncated": g.truncated,
        }
        if prefixes is not None:
            row["answer_prefix"] = prefixes[i]
        if found is not None:
            row["prefix_found"] = found[i]
        if dis is not None:
            row["distractors"] = dis[i]
            row["distractor_logps"] = _fold_ends(split_scores(tf_all[i], len(ans) * n_ends)[1], n_ends)
            row.update(distractor_stats(s.logp_gold, row["distractor_logps"]))
        for col in FACT_COLUMNS_OPTIONAL:
            if col in facts.columns:
                row[col] = facts[col].iloc[i]
        rows.append(row)
    table = pd.DataFrame(rows)
    return pd.concat([table, format_columns(table)], axis=1)


def _fact_prefixes(
    model: Any, tokenizer: Any, facts: pd.DataFrame, config: ScoreConfig, ids: list[str],
    answers: list[list[str]], dis: list[list[str]] | None,
) -> tuple[list[str] | None, list[bool] | None]:
    """Each fact's answer prefix (``prompts.PromptConfig.fact_prefix``, then the ``self`` lead-in), or None
    when no prefill is set; and, for ``self``, whether a candidate span was found."""
    prompt = config.prompt
    if not prompt.prefix_active:
        return None, None
    subjects = facts["subject"].tolist() if "subject" in facts.columns else [None] * len(facts)
    relations = facts["relation"].tolist() if "relation" in facts.columns else [None] * len(facts)
    base = [prompt.fact_prefix(s, r if isinstance(r, str) else None, q)
            for s, r, q in zip(subjects, relations, facts["question"])]
    if not prompt.self_prefix:
        return base, None
    cands = [a + (dis[i] if dis is not None else []) for i, a in enumerate(answers)]
    return self_prefixes(model, tokenizer, list(facts["question"]), cands, ids, prompt, base,
                         config.generation.max_new_tokens, config.generation.seed)


def _fold_ends(logps: Sequence[float], n_ends: int) -> list[float]:
    """Log-sum-exp over each run of ``n_ends`` rows (one answer scored with each end)."""
    if n_ends == 1:
        return [float(x) for x in logps]
    out = []
    for j in range(0, len(logps), n_ends):
        vals = [v for v in logps[j: j + n_ends] if not math.isnan(v)]
        m = max(vals, default=math.nan)
        out.append(m if not vals or m == -math.inf else m + math.log(sum(math.exp(v - m) for v in vals)))
    return out


def _fact_matcher(matcher: Matcher, distractors: Sequence[str]) -> Matcher:
    """``matcher`` with the fact's distractors when it is the built-in ``contains`` matcher: an answer
    that also names another value of the relation is wrong (the anti-hedging rule, ``matching``)."""
    cfg = getattr(matcher, "match_config", None)
    if cfg is None or cfg.mode != "contains" or not distractors:
        return matcher
    return lambda pred, answers: is_correct(pred, answers, mode=cfg.mode, max_words=cfg.max_words,
                                            distractors=distractors)


def compute_chunks(
    model: Any, tokenizer: Any, facts: pd.DataFrame, config: ScoreConfig, plan: ChunkPlan,
    matcher: Matcher, drawn: Sequence[Sequence[str]] | None = None, shard: Shard | None = None,
    on_facts: Callable[[float], None] | None = None,
) -> list[pd.DataFrame]:
    """Score the chunks that are not on disk (``shard``'s only, when given), writing each one as it
    finishes; returns them in memory only when nothing is cached (``plan.folder`` None)."""
    todo = set(plan.missing(shard))
    if plan.folder is not None:
        owned = [i for i in range(plan.n_chunks) if shard is None or shard.owns(i)]
        done = sum(plan.bounds(i)[1] - plan.bounds(i)[0] for i in owned if i not in todo)
        if done:
            logger.info("score cache: %d facts already scored in %s", done, plan.folder)
            if on_facts:
                on_facts(done)
    parts = []
    for i in sorted(todo):
        start, end = plan.bounds(i)
        part = score_chunk(model, tokenizer, facts.iloc[start:end], config, "", matcher, on_facts,
                           drawn[start:end] if drawn is not None else None)
        if plan.folder is None:
            parts.append(part)
        else:
            write_chunk(plan.path(i), part, plan.fingerprint)
    return parts


DERIVED_COLUMNS = re.compile(r"^(state(_\w+)?|pass_at_\d+)$")
"""Columns older versions stored in score tables that are interpretation, not measurement: dropped on load."""


def finish_table(table: pd.DataFrame, label: str, prior: ValuePrior | None = None) -> pd.DataFrame:
    """Label, value-prior columns and column order; columns derived from the measurements (states,
    pass@k: ``DERIVED_COLUMNS``) that older caches hold are dropped. ``prior`` pools the whole table's
    distractor scores when ``table`` is one chunk of it (``write_score_table``); by default ``table``'s
    own are pooled."""
    table = table.drop(columns=[c for c in table.columns if DERIVED_COLUMNS.match(c)])
    table["model"] = label
    table["answers"] = table["answers"].map(list)
    if prior is None and "distractor_logps" in table.columns:
        prior = ValuePrior()
        prior.add(table)
    if prior is not None:
        table[list(PRIOR_COLUMNS)] = prior.columns(table)
    first = [c for c in SCORE_COLUMNS if c in table.columns]
    return table[first + [c for c in table.columns if c not in first]]


def _score(
    model: Any, tokenizer: Any, facts: pd.DataFrame, config: ScoreConfig, model_key: str | None,
    cache_dir: str | os.PathLike[str] | None, matcher: Matcher | None, shard: Shard | None,
    on_facts: Callable[[float], None] | None,
) -> tuple[ChunkPlan, list[pd.DataFrame]]:
    if len(facts) == 0:
        raise ValueError("the facts table is empty: nothing to score")
    match = matcher or config.match.matcher()
    matcher_name = "" if matcher is None else getattr(matcher, "__qualname__", repr(matcher))
    drawn = draw_distractors(facts, config.distractors, config.generation.seed) if config.distractors else None
    plan = plan_chunks(facts, config, model_key, cache_dir, matcher_name, drawn)
    return plan, compute_chunks(model, tokenizer, facts, config, plan, match, drawn, shard, on_facts)


def score_facts(
    model: Any, tokenizer: Any, facts: pd.DataFrame, config: ScoreConfig | None = None, *,
    label: str = "model", model_key: str | None = None, cache_dir: str | os.PathLike[str] | None = None,
    matcher: Matcher | None = None, on_facts: Callable[[float], None] | None = None,
) -> pd.DataFrame:
    """The score table of ``model`` over ``facts`` (one row per fact, schema.SCORE_COLUMNS first).

    Args:
        model, tokenizer: a loaded causal LM and its tokenizer.
        facts: a facts table (``facts.load_facts``).
        config: scoring settings.
        label: the ``model`` column (e.g. ``base``, ``rl``).
        model_key: identifies the weights and tokenizer in the cache key (e.g.
            ``ModelInfo.weights_hash + vocab_hash``); None disables the cache.
        cache_dir: cache root (default ``default_cache_root()``); chunks go to
            ``<root>/scores/<fingerprint>/``.
        matcher: a ``(prediction, answers) -> bool`` callable replacing
            ``config.match`` (a judge model, say).
        on_facts: progress callback, called with the number of facts done.
    """
    config = config or ScoreConfig()
    plan, parts = _score(model, tokenizer, facts, config, model_key, cache_dir, matcher, None, on_facts)
    table = pd.concat(parts if plan.folder is None else list(iter_chunks(plan)), ignore_index=True)
    return finish_table(table, label)


def score_to_cache(
    model: Any, tokenizer: Any, facts: pd.DataFrame, config: ScoreConfig | None = None, *,
    model_key: str, cache_dir: str | os.PathLike[str] | None = None, matcher: Matcher | None = None,
    shard: Shard | None = None, on_facts: Callable[[float], None] | None = None,
) -> ChunkPlan:
    """Score the chunks of ``facts`` that are not cached yet (only ``shard``'s when given) and
    return their plan, holding nothing in memory. Several processes, one shard each, fill one
    cache; one of them then merges with ``load_chunks`` or ``write_score_table``. Arguments as
    in ``score_facts``.
    """
    plan, _ = _score(model, tokenizer, facts, config or ScoreConfig(), model_key, cache_dir, matcher, shard,
                     on_facts)
    return plan


def load_chunks(plan: ChunkPlan, label: str) -> pd.DataFrame:
    """The whole score table from a plan's chunks (every chunk must exist; fingerprints checked)."""
    wait_for_chunks(plan)
    return finish_table(pd.concat(list(iter_chunks(plan)), ignore_index=True), label)


PASS_COLUMNS: tuple[str, ...] = (
    "question", "answers", "greedy", "greedy_correct", "logp_gold", "n_samples", "answer_prefix", "relation",
    "subject", "distractors", "distractor_logps", *FORMAT_COLUMNS, *DISTRACTOR_COLUMNS,
)
"""What the first pass of ``write_score_table`` reads, one chunk at a time."""


def write_score_table(plan: ChunkPlan, out: str | os.PathLike[str], label: str,
                      eps: float | None = None) -> dict[str, Any]:
    """Write the score table to ``out`` from the plan's chunks so that memory does not grow with the
    number of facts, and return its summary: ``n_facts``, ``accuracy`` (greedy), ``formats``
    (``formats.format_summary`` with probability line ``eps``), and whether every fact has
    distractors and samples (``chance``, ``sampled``: what resolving the ``auto`` criterion needs,
    with ``analysis.states.decide_auto``).

    Two passes over the chunks. The first counts (a ``formats.FormatTally``) and pools the value
    prior (one float per distractor); the second finishes each chunk and appends it as a row group.
    The file equals ``score_facts``'s table (tested).
    """
    wait_for_chunks(plan)
    have = set(pq_columns(plan))
    columns = [c for c in PASS_COLUMNS if c in have]
    if not all(c in have for c in FORMAT_COLUMNS):  # older chunks: formats computed from the samples
        columns.append("sample_answers")
    tally, prior = FormatTally(), ValuePrior() if "distractor_logps" in have else None
    chance = sampled = True
    n = correct = 0
    for part in iter_chunks(plan, columns):
        tally.add(part)
        chance &= all(c in part.columns for c in DISTRACTOR_COLUMNS)
        sampled &= "n_samples" in part.columns and bool((part["n_samples"] > 0).all())
        n += len(part)
        correct += int(part["greedy_correct"].astype(bool).sum())
        if prior is not None:
            prior.add(part)
    merge_chunks(plan, Path(out), lambda part: finish_table(part, label, prior))
    complete = all(c in have for c in ("answers", "greedy", "greedy_correct", "logp_gold"))
    return {"n_facts": n, "accuracy": correct / n if n else math.nan, "formats": tally.summary(eps),
            "formats_complete": complete, "chance": chance, "sampled": sampled}
