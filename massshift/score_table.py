"""Building the score table of one model over a facts table, cached and resumable.

This is the expensive stage (DESIGN.md data flow): teacher forcing
(``scoring``) and greedy plus sampled answers (``generation``) for every fact,
judged by one matcher (``matching``), one row per fact (``schema``). Work is
split into chunks of facts; each finished chunk is written atomically to a
cache folder keyed by a fingerprint of everything that changes the numbers
(weights, tokenizer, prompt, matching, sampling, facts, and the drawn
distractors when ``ScoreConfig.distractors > 0``). An interrupted run
resumes from its finished chunks; a repeated run computes nothing. A missing
cache entry is computed and logged, never silently mixed with other settings.

Distractors (``massshift.distractors``) are drawn once over the whole facts
table and teacher-forced as extra continuations of each fact's prompt, in the
same batch as its aliases; the gold's numbers do not change with them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from massshift.distractors import distractor_stats, draw_distractors
from massshift.generation import GenerationConfig, generate
from massshift.matching import MatchConfig, Matcher, normalize
from massshift.prompts import PromptConfig, build_prompt, encode_facts, encode_prompt
from massshift.rundir import cache_root, write_json, write_parquet
from massshift.schema import FACT_COLUMNS_OPTIONAL, SCORE_COLUMNS
from massshift.scoring import AliasScores, ScoringConfig, score_items

logger = logging.getLogger(__name__)


def default_cache_root() -> Path:
    """``$MASSSHIFT_CACHE`` or ``~/.cache/massshift`` (``rundir.cache_root``)."""
    return cache_root()


@dataclass(frozen=True)
class ScoreConfig:
    """Everything that decides one model's score table.

    Attributes:
        prompt: how questions become prompts (``prompts.PromptConfig``).
        match: how answers are judged (``matching.MatchConfig``).
        generation: greedy decoding and sampling (``generation.GenerationConfig``).
        scoring: teacher-forcing batches (``scoring.ScoringConfig``; does not change numbers).
        chunk_size: facts per cached chunk (progress is saved after each chunk).
        distractors: distractor answers scored per fact (``distractors.draw_distractors``,
            seeded by ``generation.seed``); 0 (the default) scores none and writes no
            distractor columns. They are drawn from the whole facts table, then scored
            on the gold answer's prompt pass, so each costs one continuation row.
    """

    prompt: PromptConfig = field(default_factory=PromptConfig)
    match: MatchConfig = field(default_factory=MatchConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    chunk_size: int = 64
    distractors: int = 0

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
        return key


def facts_hash(facts: pd.DataFrame) -> str:
    """A hash of fact ids, questions and answers, in order."""
    h = hashlib.sha256()
    for fid, q, ans in zip(facts["fact_id"], facts["question"], facts["answers"]):
        h.update(json.dumps([str(fid), q, list(ans)], ensure_ascii=False).encode())
    return h.hexdigest()[:16]


def fingerprint(
    model_key: str, config: ScoreConfig, facts: pd.DataFrame, matcher_name: str = "",
    distractors: Sequence[Sequence[str]] | None = None,
) -> str:
    """A stable key for (weights + tokenizer, settings, facts, and the drawn distractors when any)."""
    content: dict[str, Any] = {"model": model_key, "config": config.numbers_key(), "facts": facts_hash(facts),
                               "matcher": matcher_name, "chunk_size": config.chunk_size}
    if distractors is not None and config.distractors:
        # the draw depends on relations and subjects too, which facts_hash does not cover
        content["distractor_lists"] = hashlib.sha256(
            json.dumps([list(d) for d in distractors], ensure_ascii=False).encode()).hexdigest()[:16]
    payload = json.dumps(content, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


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


def pass_at_k_ks(n: int) -> list[int]:
    """k = 1, 2, 4, ... up to n (n itself included)."""
    ks, k = [], 1
    while k < n:
        ks.append(k)
        k *= 2
    return ks + [n] if n >= 1 else []


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
    from massshift.stats import pass_at_k  # the one definition of the estimator

    ids = [str(f) for f in facts["fact_id"]]
    questions = list(facts["question"])
    answers = [list(a) for a in facts["answers"]]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    if config.distractors and distractors is None:
        distractors = draw_distractors(facts, config.distractors, config.generation.seed)
    dis = [list(d) for d in distractors] if config.distractors and distractors is not None else None
    conts = [a + d for a, d in zip(answers, dis)] if dis is not None else answers
    items = encode_facts(tokenizer, questions, conts, config.prompt, fact_ids=ids)
    half = (lambda n: on_facts(n / 2)) if on_facts else None
    tf_all = score_items(model, items, pad_id, config.scoring, on_batch=half)
    tf = [split_scores(s, len(a))[0] for s, a in zip(tf_all, answers)]
    prompts = [encode_prompt(tokenizer, build_prompt(q, config.prompt, tokenizer), config.prompt) for q in questions]
    gens = generate(model, prompts, ids, tokenizer, config.generation, config.prompt.terminator, on_batch=half)
    rows = []
    n = config.generation.n_samples
    for i, (fid, q, ans, s, g) in enumerate(zip(ids, questions, answers, tf, gens)):
        counts = answer_counts(g.samples)
        n_correct = sum(bool(matcher(a, ans)) for a in g.samples)
        best = s.best
        row = {
            "fact_id": fid, "question": q, "answers": ans, "model": label,
            "greedy": g.greedy, "greedy_correct": bool(matcher(g.greedy, ans)),
            "logp_gold": s.logp_gold, "logp_gold_per_token": s.logp_per_token,
            "best_alias": ans[best], "is_greedy": s.is_greedy,
            "n_samples": n, "n_correct": n_correct,
            "sample_answers": json.dumps(counts, ensure_ascii=False),
            "answer_entropy": entropy_nats(counts), "state": "",
            "token_logps": s.token_logps[best], "n_truncated": g.truncated,
        }
        if dis is not None:
            row["distractors"] = dis[i]
            row["distractor_logps"] = split_scores(tf_all[i], len(ans))[1]
            row.update(distractor_stats(s.logp_gold, row["distractor_logps"]))
        for k in pass_at_k_ks(n):
            row[f"pass_at_{k}"] = float(pass_at_k(n, n_correct, k))
        for col in FACT_COLUMNS_OPTIONAL:
            if col in facts.columns:
                row[col] = facts[col].iloc[i]
        rows.append(row)
    return pd.DataFrame(rows)


def score_facts(
    model: Any, tokenizer: Any, facts: pd.DataFrame, config: ScoreConfig | None = None, *,
    label: str = "model", model_key: str | None = None, cache_dir: str | os.PathLike[str] | None = None,
    matcher: Matcher | None = None, state_config: Any = None,
    on_facts: Callable[[float], None] | None = None,
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
        state_config: ``categories.StateConfig`` for the ``state`` column (default ``auto``:
            ``chance`` when distractors were scored, else ``logprob``).
        on_facts: progress callback, called with the number of facts done.
    """
    from massshift.categories import StateConfig, add_state_columns

    config = config or ScoreConfig()
    if len(facts) == 0:
        raise ValueError("the facts table is empty: nothing to score")
    match = matcher or config.match.matcher()
    matcher_name = "" if matcher is None else getattr(matcher, "__qualname__", repr(matcher))
    drawn = draw_distractors(facts, config.distractors, config.generation.seed) if config.distractors else None
    chunk_dir = None
    if model_key is not None:
        fp = fingerprint(model_key, config, facts, matcher_name, drawn)
        chunk_dir = Path(cache_dir or default_cache_root()) / "scores" / fp
        chunk_dir.mkdir(parents=True, exist_ok=True)
        write_json(chunk_dir / "meta.json", {"model_key": model_key, "config": config.numbers_key(),
                                             "n_facts": len(facts), "chunk_size": config.chunk_size})
    parts = []
    n_cached = 0
    for start in range(0, len(facts), config.chunk_size):
        chunk = facts.iloc[start: start + config.chunk_size]
        path = chunk_dir / f"chunk-{start // config.chunk_size:06d}.parquet" if chunk_dir else None
        if path is not None and path.exists():
            part = pd.read_parquet(path)
            n_cached += len(part)
            if on_facts:
                on_facts(len(part))
        else:
            part = score_chunk(model, tokenizer, chunk, config, label, match, on_facts,
                               drawn[start: start + config.chunk_size] if drawn is not None else None)
            if path is not None:
                write_parquet(path, part)
        parts.append(part)
    if n_cached:
        logger.info("score cache: %d of %d facts read from %s", n_cached, len(facts), chunk_dir)
    table = pd.concat(parts, ignore_index=True)
    table["model"] = label
    table["answers"] = table["answers"].map(list)
    table = add_state_columns(table, state_config or StateConfig())
    first = [c for c in SCORE_COLUMNS if c in table.columns]
    return table[first + [c for c in table.columns if c not in first]]
