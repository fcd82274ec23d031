"""report.md's sections on what the gain is made of: gain kinds, answer diversity and collapse, the
constant-answer baseline and the never-seen controls; and the stacked-bar figure of gain kinds."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from massshift.analysis.gains import GAIN_KINDS, LOSS_KINDS


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def gain_lines(decomp: dict[str, Any] | None, rl: str = "rl") -> list[str]:
    """The "What kind of gain" table: each kind's count, share with CI, and gains that were a base evasion."""
    if not decomp:
        return []
    lines = ["## What kind of gain", "",
             "Each fact that became greedy-correct gets one kind, tested in this order: `format` (the base already "
             "named the gold in a rejected form), `guess` (the RL answer is not specific to the subject: one value "
             "for most subjects of the relation, or as high on other subjects' prompts), `recall` (tail-correct "
             "in the base, specific in RL), `acquisition` (absent in the base, specific in RL).", "",
             "| kind | facts | share of gains | from a base evasion |", "|---|---|---|---|"]
    for kind in GAIN_KINDS:
        k = decomp["kinds"][kind]
        ci = f" [{_pct(k['ci'][0])}, {_pct(k['ci'][1])}]" if k.get("ci") else ""
        lines.append(f"| `{kind}` | {k['count']} | {_pct(k['share'])}{ci} | {k['from_base_evasion']} |")
    missing = [t for t, ran in decomp["tests"].items() if not ran]
    if missing:
        lines += ["", "Not run: " + ", ".join(f"the {t} test" for t in missing)
                  + " (needs relations in the facts for collapse, distractors for the value prior)."]
    losses = decomp["losses"]
    if decomp["n_lost"]:
        lines += ["", f"Lost ({decomp['n_lost']} facts greedy-correct in the base only): "
                  + ", ".join(f"{losses[k]} {k}" for k in LOSS_KINDS if losses[k]) + "."]
    if decomp.get("per_relation"):
        lines += ["", "| relation | facts | " + " | ".join(GAIN_KINDS) + " |", "|---|---|" + "---|" * len(GAIN_KINDS)]
        lines += [f"| {r['relation']} | {r['n_facts']} | " + " | ".join(str(r[k]) for k in GAIN_KINDS) + " |"
                  for r in decomp["per_relation"]]
    return lines + [""]


def diversity_lines(diversity: dict[str, list[dict[str, Any]]] | None, warnings: Sequence[str] = ()) -> list[str]:
    """Answer diversity per relation and model, counted on the value each answer names."""
    if not diversity or not any(diversity.values()):
        return []
    lines = ["## Answer diversity", "",
             "Counted on the value of the relation each greedy answer names (a sentence naming Paris counts as "
             "Paris); an answer naming no value of its relation is an evasion.", ""]
    lines += [f"**Warning: {w}.**" for w in warnings] + ([""] if warnings else [])
    lines += ["| model | relation | subjects | distinct values | most common (share) | evasions |",
              "|---|---|---|---|---|---|"]
    for label, rows in diversity.items():
        for r in rows:
            flag = " **collapse**" if r["collapsed"] else ""
            lines.append(f"| {label} | {r['relation']} | {r['n_subjects']} | {r['distinct_values']} | "
                         f"{r['top_value'] or '-'} ({_pct(r['top_share'])}){flag} | {r['evasions']} |")
    return lines + [""]


def constant_lines(const: dict[str, Any] | None, accuracy: dict[str, Any], base: str, rl: str) -> list[str]:
    """The constant-answer baseline next to both models' greedy accuracy."""
    if not const:
        return []
    acc = const["accuracy"]
    ci = f" [{_pct(acc['ci'][0])}, {_pct(acc['ci'][1])}]" if acc.get("ci") else ""
    src = "training facts" if const["source"] == "train" else "the other test facts (leave-one-out)"
    return ["## Constant-answer baseline", "",
            f"Answering every question of a relation with its most common value (counted among {src}): "
            f"{_pct(acc['value'])}{ci}, against greedy {base} {_pct(accuracy['base']['value'])} and {rl} "
            f"{_pct(accuracy['rl']['value'])}. A gain that does not clear this line is no evidence of knowledge.",
            "", "| relation | facts | constant answer | its accuracy |", "|---|---|---|---|",
            *[f"| {r['relation']} | {r['n']} | {r['answer']} | {_pct(r['accuracy'])} |" for r in const["per_relation"]],
            ""]


def control_lines(summary: dict[str, Any] | None) -> list[str]:
    """report.md's "Never-seen controls" section (empty without controls)."""
    if not summary:
        return []
    crits = summary["criteria"]
    pct = lambda v: "-" if v is None else f"{100 * v:.1f}%"  # noqa: E731
    lines = ["## Never-seen controls", "",
             f"{summary['n']} questions about invented subjects (a real fact's question with its subject replaced, "
             "the gold drawn from the relation's answers) were scored with the rest and kept out of every other "
             "number. No model can know them: a tail-correct label there is the criterion's false-positive "
             "rate, a greedy-correct answer a guess.", "",
             "| model | facts | greedy-correct | " + " | ".join(f"tail-correct (`{c}`)" for c in crits) + " |",
             "|---|---|---|" + "---|" * len(crits)]
    for label, m in summary["models"].items():
        for kind in ("controls", "real"):
            r = m[kind]
            lines.append(f"| {label} | {kind} ({r['n']}) | {pct(r['greedy_share'])} | "
                         + " | ".join(pct(r["tail_share"][c]) for c in crits) + " |")
    return lines + [""]


def knowledge(merged_all: Sequence[tuple[str, pd.DataFrame]], state_cfg: Any, stats_cfg: Any, base_label: str,
              train: pd.DataFrame | None = None, match_mode: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """summary.json's gain decomposition, diversity, collapse warnings and constant baseline of the headline
    checkpoint (the last), and the facts.parquet columns: ``gain_kind``, ``loss_kind`` and, for a trajectory,
    ``gain_kind_<label>`` per checkpoint."""
    from massshift.analysis.estimators import Bootstrap
    from massshift.analysis.gains import knowledge_summary
    from massshift.analysis.statistics import model_states

    columns: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    for i, (label, merged) in enumerate(merged_all):
        base_states, _ = model_states(merged, state_cfg)
        part, gain, loss = knowledge_summary(
            merged, base_states, Bootstrap(len(merged), stats_cfg), base=base_label, rl=label,
            chance_specificity=state_cfg.chance_specificity, train=train, match_mode=match_mode or "exact")
        if len(merged_all) > 1:
            columns[f"gain_kind_{label}"] = gain.to_numpy()
        if i == len(merged_all) - 1:
            summary, columns["gain_kind"], columns["loss_kind"] = part, gain.to_numpy(), loss.to_numpy()
    return summary, columns
