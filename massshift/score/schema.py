"""The score table: the contract between scoring and analysis.

One row per (fact, model), measurements only. Scoring (``massshift.score.table``) writes it; the
analysis modules (states, transitions, statistics) and the report read it, decide the states, and
never load a model. Columns:

===================  ===========  ==========================================================
column               dtype        meaning
===================  ===========  ==========================================================
fact_id              str          stable fact id (``facts.fact_id``)
question             str          the question text
answers              list[str]    accepted aliases
model                str          a label for the model (e.g. ``base``, ``rl``)
greedy               str          greedy answer, cut at the terminator and stripped
greedy_correct       bool         ``matching.is_correct(greedy, answers)``
logp_gold            float        natural-log p(answer + terminator | prompt), log-sum-exp
                                  over aliases; may be -inf or NaN (kept, never dropped)
logp_gold_per_token  float        log-prob of the best alias divided by its token count
best_alias           str          the alias with the highest log-prob
is_greedy            bool         every continuation token of some alias is the argmax
n_samples            int          number of samples drawn (0: no sampling)
n_correct            int          correct samples among them
sample_answers       str          JSON object: normalised sampled answer -> count
answer_entropy       float        entropy (nats) of the distinct normalised sampled answers;
                                  NaN when n_samples == 0
===================  ===========  ==========================================================

Optional columns carried from the facts file: ``subject``, ``relation``,
``object``, ``popularity``. Extra columns are allowed and kept.

Distractor columns (``DISTRACTOR_COLUMNS``; written only when scoring with
``ScoreConfig.distractors > 0``, see ``massshift.score.distractors``):

======================  ===========  =======================================================
column                  dtype        meaning
======================  ===========  =======================================================
distractors             list[str]    the distractor answers scored for this fact
distractor_logps        list[float]  their summed log-probs (answer + terminator), same order
gold_rank               float        1 + distractors with log-prob >= logp_gold (1: gold first);
                                     NaN without distractors or with a NaN logp_gold
k_q                     float        share of (gold, distractor) pairs the gold wins, ties 0.5
logp_best_distractor    float        the highest distractor log-prob
logp_median_distractor  float        the median distractor log-prob
n_distractors           int          distractors scored (0: no chance line for this fact)
prior_quantile          float        share of the gold value's scores on other subjects' prompts
                                     (as their distractor) below logp_gold; NaN when none
prior_n                 int          how many such scores (the value-prior test needs >= 10)
======================  ===========  =======================================================

The last two are added over the whole table (``distractors.ValuePrior``) when it is
finished, not per chunk, so cached chunks stay valid.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

SCORE_COLUMNS: tuple[str, ...] = (
    "fact_id", "question", "answers", "model", "greedy", "greedy_correct", "logp_gold",
    "logp_gold_per_token", "best_alias", "is_greedy", "n_samples", "n_correct",
    "sample_answers", "answer_entropy",
)
FACT_COLUMNS_OPTIONAL: tuple[str, ...] = ("subject", "relation", "object", "popularity")
DISTRACTOR_COLUMNS: tuple[str, ...] = (
    "gold_rank", "k_q", "logp_best_distractor", "logp_median_distractor", "n_distractors",
)
"""The per-fact numbers of the distractor comparison; the ``chance`` criterion needs them all."""

STATES: tuple[str, ...] = ("greedy-correct", "tail-correct", "absent")
"""The three states of a fact under one model, in the order used by every table and figure."""


class ScoreTableError(ValueError):
    """A score table lacks columns or does not fit its partner table."""


def check_score_table(df: pd.DataFrame, name: str = "score table", required: Iterable[str] | None = None) -> None:
    """Raise ``ScoreTableError`` naming ``name`` and the missing columns, if any."""
    required = tuple(SCORE_COLUMNS if required is None else required)
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ScoreTableError(
            f"{name} lacks column(s) {', '.join(missing)}; it has {', '.join(map(str, df.columns))}. "
            "Score tables are written by `massshift score`."
        )
    if df["fact_id"].duplicated().any():
        dup = df.loc[df["fact_id"].duplicated(), "fact_id"].iloc[0]
        raise ScoreTableError(f"{name} has duplicate fact_id {dup!r}")
