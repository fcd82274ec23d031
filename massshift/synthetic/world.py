"""The synthetic fact world: invented people, their attributes, and the corpus that mentions them.

Modelled on the biography worlds of Allen-Zhu and Li (arXiv 2309.14316,
"Physics of Language Models 3.1"): every person has one value per relation
(birth city, employer, university, field, hobby, pet); the corpus states these
facts in biography sentences drawn from several paraphrase templates, in
shuffled order. Only a share of people (the "QA people", ``qa_share``) also
appear in question-answer lines written exactly in massshift's prompt format
(``"Q: {question}\\nA: {answer}\\n"``), so the knowledge of everybody else lives
only in biographies and must be extracted, not recalled, at question time.

The world is built to give facts of every accessibility:

- values follow a Zipf popularity skew (``value_zipf``), so guessing the popular
  value is sometimes right;
- the number of biographies per person follows a power law capped at
  ``exposure_cap``: a few people are mentioned often, many once or twice, and a
  share ``unseen_share`` never (their names are in the vocabulary but nowhere in
  the corpus: the control group);
- a share ``default_noise`` of QA lines is answered with a per-relation default
  value (the most popular value, or one that belongs to nobody), the kind of
  prior an RL fine-tune can unlearn.

Each fact records ``exposure``: how many times its (subject, relation, object)
appears in the corpus, as a biography sentence or as a correctly answered QA
line; ``popularity`` equals it. A world is deterministic for its config:
``write_world`` of the same config gives byte-identical files.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from massshift.configio import ConfigIO, help_field
from massshift.data.names import invent_names
from massshift.rundir import init_run_dir, write_csv, write_json, write_text
from massshift.synthetic.tokenizer import build_tokenizer, load_tokenizer, save_tokenizer

logger = logging.getLogger(__name__)

QUESTION_TEMPLATES: dict[str, str] = {
    "birth_city": "Where was {subject} born?",
    "employer": "Who does {subject} work for?",
    "university": "Which university did {subject} attend?",
    "field": "What is the field of {subject}?",
    "hobby": "What is the hobby of {subject}?",
    "pet": "What pet does {subject} own?",
}
"""The one question template per relation, used in the corpus's QA lines and in facts.jsonl."""

BIO_TEMPLATES: dict[str, tuple[str, ...]] = {
    "birth_city": (
        "{subject} was born in {object}.",
        "{object} is the birth city of {subject}.",
        "{subject} came into the world in {object}.",
        "The birthplace of {subject} is {object}.",
    ),
    "employer": (
        "{subject} works for {object}.",
        "{object} employs {subject}.",
        "{subject} has a job at {object}.",
        "The employer of {subject} is {object}.",
    ),
    "university": (
        "{subject} studied at {object}.",
        "{object} is where {subject} went to university.",
        "{subject} graduated from {object}.",
        "The university of {subject} was {object}.",
    ),
    "field": (
        "{subject} specialised in {object}.",
        "{object} is the field of {subject}.",
        "{subject} does research on {object}.",
        "The field of {subject} is {object}.",
    ),
    "hobby": (
        "{subject} enjoys {object}.",
        "{object} is the favourite hobby of {subject}.",
        "In free time {subject} practises {object}.",
        "The hobby of {subject} is {object}.",
    ),
    "pet": (
        "{subject} owns a {object}.",
        "{object} is the pet of {subject}.",
        "{subject} lives with a pet {object}.",
        "The pet of {subject} is a {object}.",
    ),
}
"""Biography paraphrases per relation; a world uses the first ``n_paraphrases`` of each."""

GROUPS: tuple[str, ...] = ("qa", "bio_only", "unseen")
"""Person groups: QA lines and biographies; biographies only; nowhere in the corpus."""

@dataclass(frozen=True)
class WorldConfig(ConfigIO):
    """Settings of a synthetic world (every field is written to the world's config.yaml)."""

    seed: int = help_field(0, help="Seed of every random choice in the world.")
    n_people: int = help_field(800, help="Number of invented people.")
    relations: tuple[str, ...] = help_field(tuple(QUESTION_TEMPLATES), help=(
        "Attributes every person has, a subset of QUESTION_TEMPLATES."))
    n_values: int = help_field(100, help="Size of each relation's pool of invented values.")
    value_zipf: float = help_field(1.0, help=(
        "Zipf exponent of value popularity (0: uniform; 1: the top value is n_values-fold more common than the last)."))
    exposure_exponent: float = help_field(1.5, help=(
        "Power-law exponent of the number of biographies of a seen person, P(n) ~ n^-exponent on 1..exposure_cap."))
    exposure_cap: int = help_field(64, help="The most biographies one person gets.")
    unseen_share: float = help_field(0.1, help="Share of people who appear nowhere in the corpus.")
    mention_prob: float = help_field(0.8, help=(
        "Chance that a biography states a given relation (each biography states at least one)."))
    n_paraphrases: int = help_field(4, help="Biography templates used per relation (1-4).")
    qa_share: float = help_field(0.3, help=(
        "Share of all people with QA lines in the corpus (chosen among the seen people, so at most 1 - unseen_share)."))
    qa_repeats: int = help_field(1, help="QA documents per QA person, each with one line per relation.")
    default_noise: float = help_field(0.1, help="Share of QA lines answered with the relation's default value.")
    default_kind: Literal["popular", "nobody"] = help_field("popular", help=(
        "popular (the most common value of the relation) or nobody (an extra invented value that belongs to no one)."))

    def __post_init__(self) -> None:
        object.__setattr__(self, "relations", tuple(self.relations))
        if self.n_people < 1:
            raise ValueError(f"n_people must be >= 1, got {self.n_people}")
        unknown = [r for r in self.relations if r not in QUESTION_TEMPLATES]
        if not self.relations or unknown or len(set(self.relations)) != len(self.relations):
            raise ValueError(
                f"relations must be distinct names from {list(QUESTION_TEMPLATES)}; got {list(self.relations)}"
            )
        if self.n_values < 2:
            raise ValueError(f"n_values must be >= 2 (50-200 is typical), got {self.n_values}")
        if self.value_zipf < 0:
            raise ValueError(f"value_zipf must be >= 0 (0 = uniform), got {self.value_zipf}")
        if self.exposure_exponent <= 0:
            raise ValueError(f"exposure_exponent must be > 0 (1-2 is typical), got {self.exposure_exponent}")
        if self.exposure_cap < 1:
            raise ValueError(f"exposure_cap must be >= 1, got {self.exposure_cap}")
        if not 0 <= self.unseen_share < 1:
            raise ValueError(f"unseen_share must be in [0, 1), got {self.unseen_share}")
        if not 0 < self.mention_prob <= 1:
            raise ValueError(f"mention_prob must be in (0, 1], got {self.mention_prob}")
        n_templates = min(len(t) for t in BIO_TEMPLATES.values())
        if not 1 <= self.n_paraphrases <= n_templates:
            raise ValueError(f"n_paraphrases must be in 1..{n_templates}, got {self.n_paraphrases}")
        if not 0 <= self.qa_share <= 1 - self.unseen_share:
            raise ValueError(
                f"qa_share must be in [0, 1 - unseen_share = {1 - self.unseen_share:g}] because QA people "
                f"are drawn from the seen people; got {self.qa_share}"
            )
        if self.qa_repeats < 1:
            raise ValueError(f"qa_repeats must be >= 1, got {self.qa_repeats}")
        if not 0 <= self.default_noise <= 1:
            raise ValueError(f"default_noise must be in [0, 1], got {self.default_noise}")
        if self.default_kind not in ("popular", "nobody"):
            raise ValueError(f"default_kind must be 'popular' or 'nobody', got {self.default_kind!r}")




@dataclass
class World:
    """A built world: its people, facts and corpus.

    Attributes:
        config: the settings it was built from.
        people: one row per person: ``subject``, ``group`` (see ``GROUPS``),
            ``n_bios`` and one column per relation holding the person's value.
        facts: one row per (person, relation): ``fact_id, question, answers,
            subject, relation, object, popularity, exposure, qa_in_corpus`` and the
            counts behind exposure: ``group, bio_mentions, qa_lines, qa_default_lines``.
        corpus: the pretraining text: documents separated by a blank line.
        values: each relation's value pool, most popular first by construction.
        defaults: each relation's default value (the answer of noisy QA lines).
    """

    config: WorldConfig
    people: pd.DataFrame
    facts: pd.DataFrame
    corpus: str
    values: dict[str, list[str]] = field(default_factory=dict)
    defaults: dict[str, str] = field(default_factory=dict)

    def documents(self) -> list[str]:
        """The corpus split into its documents, each ending in a newline."""
        return split_documents(self.corpus)


def split_documents(corpus: str) -> list[str]:
    """Split a corpus at blank lines; every document keeps its final newline."""
    return [doc + "\n" for doc in corpus.strip("\n").split("\n\n") if doc]


def _reserved_words() -> set[str]:
    words: set[str] = set()
    for text in [*QUESTION_TEMPLATES.values(), *(t for ts in BIO_TEMPLATES.values() for t in ts)]:
        for word in text.replace("{subject}", " ").replace("{object}", " ").split():
            words.add(word.strip("?.:").lower())
    return words | {"q", "a", "an", "the"}


def _n_bios(rng: np.random.Generator, n: int, exponent: float, cap: int) -> np.ndarray:
    support = np.arange(1, cap + 1)
    p = support.astype(float) ** -exponent
    return rng.choice(support, size=n, p=p / p.sum())


def build_world(config: WorldConfig | None = None) -> World:
    """Build the world of ``config``: people, values, facts and the shuffled corpus."""
    cfg = config or WorldConfig()
    streams = [np.random.default_rng([cfg.seed, k]) for k in range(6)]
    names_rng, assign_rng, expo_rng, bio_rng, qa_rng, shuffle_rng = streams
    people, values, defaults = _people(cfg, names_rng, assign_rng, expo_rng)
    docs, counts = _documents(cfg, people, defaults, bio_rng, qa_rng)
    corpus = "\n".join(docs[i] for i in shuffle_rng.permutation(len(docs)))
    facts = _facts(cfg, people, *counts)
    logger.info(
        "built world seed=%d: %d people, %d facts, %d documents, %d characters",
        cfg.seed, cfg.n_people, len(facts), len(docs), len(corpus),
    )
    return World(config=cfg, people=people, facts=facts, corpus=corpus, values=values, defaults=defaults)


def _people(cfg: WorldConfig, names_rng: np.random.Generator, assign_rng: np.random.Generator,
            expo_rng: np.random.Generator) -> tuple[pd.DataFrame, dict[str, list[str]], dict[str, str]]:
    """The people (name, group, number of biographies, one value per relation), each relation's values and
    its default answer."""
    taken = _reserved_words()
    subjects = invent_names(names_rng, cfg.n_people, taken)
    values = {r: invent_names(names_rng, cfg.n_values, taken) for r in cfg.relations}
    spare = {r: invent_names(names_rng, 1, taken)[0] for r in cfg.relations}

    people = pd.DataFrame({"subject": subjects})
    ranks = np.arange(1, cfg.n_values + 1, dtype=float)
    weights = ranks**-cfg.value_zipf
    for r in cfg.relations:
        people[r] = assign_rng.choice(values[r], size=cfg.n_people, p=weights / weights.sum())
    defaults: dict[str, str] = {}
    for r in cfg.relations:
        if cfg.default_kind == "nobody":
            defaults[r] = spare[r]
            values[r] = [*values[r], spare[r]]
        else:
            counts = Counter(people[r])
            defaults[r] = max(values[r], key=lambda v: counts[v])  # ties: the higher-ranked value

    order = expo_rng.permutation(cfg.n_people)
    n_unseen = round(cfg.unseen_share * cfg.n_people)
    n_qa = round(cfg.qa_share * cfg.n_people)
    group = np.full(cfg.n_people, "bio_only", dtype=object)
    group[order[:n_unseen]] = "unseen"
    group[order[n_unseen : n_unseen + n_qa]] = "qa"
    n_bios = _n_bios(expo_rng, cfg.n_people, cfg.exposure_exponent, cfg.exposure_cap)
    n_bios[group == "unseen"] = 0
    people["group"] = group
    people["n_bios"] = n_bios.astype(int)
    return people[["subject", "group", "n_bios", *cfg.relations]], values, defaults


def _documents(cfg: WorldConfig, people: pd.DataFrame, defaults: dict[str, str], bio_rng: np.random.Generator,
               qa_rng: np.random.Generator) -> tuple[list[str], tuple[Counter[tuple[str, str]], ...]]:
    """The corpus documents in people order (biographies, then the QA documents of the ``qa`` group) and,
    per (subject, relation), the biography mentions, QA lines and QA lines that gave the default."""
    bio_mentions: Counter[tuple[str, str]] = Counter()
    qa_lines: Counter[tuple[str, str]] = Counter()
    qa_default: Counter[tuple[str, str]] = Counter()
    docs: list[str] = []
    for row in people.itertuples(index=False):
        subject = row.subject
        facts_of = {r: getattr(row, r) for r in cfg.relations}
        for _ in range(row.n_bios):
            stated = [r for r in cfg.relations if bio_rng.random() < cfg.mention_prob]
            if not stated:
                stated = [cfg.relations[bio_rng.integers(len(cfg.relations))]]
            stated = [stated[i] for i in bio_rng.permutation(len(stated))]
            sentences = []
            for r in stated:
                template = BIO_TEMPLATES[r][bio_rng.integers(cfg.n_paraphrases)]
                sentences.append(template.format(subject=subject, object=facts_of[r]))
                bio_mentions[subject, r] += 1
            docs.append(" ".join(sentences) + "\n")
        if row.group != "qa":
            continue
        for _ in range(cfg.qa_repeats):
            lines = []
            for i in qa_rng.permutation(len(cfg.relations)):
                r = cfg.relations[i]
                answer = defaults[r] if qa_rng.random() < cfg.default_noise else facts_of[r]
                qa_lines[subject, r] += 1
                qa_default[subject, r] += answer != facts_of[r]
                lines.append(f"Q: {QUESTION_TEMPLATES[r].format(subject=subject)}\nA: {answer}\n")
            docs.append("".join(lines))
    return docs, (bio_mentions, qa_lines, qa_default)


def _facts(cfg: WorldConfig, people: pd.DataFrame, bio_mentions: Counter[tuple[str, str]],
           qa_lines: Counter[tuple[str, str]], qa_default: Counter[tuple[str, str]]) -> pd.DataFrame:
    """One fact per (person, relation), with its exposure: mentions plus QA lines that gave the true value."""
    rows = []
    for row in people.itertuples(index=False):
        for r in cfg.relations:
            key = (row.subject, r)
            obj = getattr(row, r)
            exposure = bio_mentions[key] + qa_lines[key] - qa_default[key]
            rows.append({
                "fact_id": f"{row.subject}|{r}",
                "question": QUESTION_TEMPLATES[r].format(subject=row.subject),
                "answers": [obj],
                "subject": row.subject,
                "relation": r,
                "object": obj,
                "popularity": exposure,
                "exposure": exposure,
                "qa_in_corpus": qa_lines[key] > 0,
                "group": row.group,
                "bio_mentions": bio_mentions[key],
                "qa_lines": qa_lines[key],
                "qa_default_lines": qa_default[key],
            })
    return pd.DataFrame(rows)


def world_tokenizer(world: World) -> PreTrainedTokenizerFast:
    """The world's word-level tokenizer: the corpus plus every question and answer, so unseen
    people's names and unused values are tokens too."""
    extra = [f"Q: {q}\nA: {v}\n" for q, v in zip(world.facts["question"], world.facts["object"])]
    extra += [" " + v for pool in world.values.values() for v in pool]
    return build_tokenizer([world.corpus, *extra])


def facts_jsonl(facts: pd.DataFrame) -> str:
    """The facts as JSON lines, one object per fact, keys in the table's column order."""
    lines = []
    for rec in facts.to_dict(orient="records"):
        rec = {k: (v.item() if hasattr(v, "item") else v) for k, v in rec.items()}
        rec["answers"] = list(rec["answers"])
        lines.append(json.dumps(rec, ensure_ascii=False))
    return "\n".join(lines) + "\n"


def write_world(world: World, out_dir: str | os.PathLike[str]) -> Path:
    """Write ``world`` into ``out_dir``.

    Files: ``config.yaml`` and ``env.json`` (the run directory), ``corpus.txt``,
    ``facts.jsonl``, ``people.csv``, ``values.json`` (value pools and defaults)
    and ``tokenizer/`` (``save_pretrained``). All but env.json are byte-identical
    for the same config.
    """
    out = init_run_dir(out_dir, world.config, seed=world.config.seed)
    write_text(out / "corpus.txt", world.corpus)
    write_text(out / "facts.jsonl", facts_jsonl(world.facts))
    write_csv(out / "people.csv", world.people)
    write_json(out / "values.json", {"values": world.values, "defaults": world.defaults})
    save_tokenizer(world_tokenizer(world), out / "tokenizer")
    logger.info("wrote world to %s", out)
    return out


def load_world(world_dir: str | os.PathLike[str]) -> World:
    """Read a world written by :func:`write_world`."""
    d = Path(world_dir)
    if not (d / "corpus.txt").exists():
        raise FileNotFoundError(f"{d} has no corpus.txt; write a world there with `massshift world`")
    values = json.loads((d / "values.json").read_text(encoding="utf-8"))
    return World(
        config=WorldConfig.from_yaml(d / "config.yaml"),
        people=pd.read_csv(d / "people.csv"),
        facts=pd.read_json(d / "facts.jsonl", lines=True, dtype=False),
        corpus=(d / "corpus.txt").read_text(encoding="utf-8"),
        values=values["values"],
        defaults=values["defaults"],
    )


def load_world_tokenizer(world_dir: str | os.PathLike[str]) -> PreTrainedTokenizerBase:
    """The tokenizer saved in a world folder."""
    return load_tokenizer(Path(world_dir) / "tokenizer")
