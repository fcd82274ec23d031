"""The country study's main table: relative gains and the markdown of results.md (``countries.run_study``)."""

from __future__ import annotations

from typing import Any

import pandas as pd


def with_relative_gain(results: pd.DataFrame, base_method: str) -> pd.DataFrame:
    """``results`` with ``relative_gain`` = accuracy / the base's greedy accuracy - 1 (NaN when it is 0)."""
    base = float(results.loc[results["method"] == base_method, "accuracy"].iloc[0])
    out = results.copy()
    out["relative_gain"] = out["accuracy"] / base - 1 if base > 0 else float("nan")
    return out


def results_markdown(summary: dict[str, Any]) -> str:
    """The main table (held-out greedy accuracy, CIs, relative gain) and the GRPO transitions, as markdown."""
    n = summary["n_facts"]
    lines = [f"# {summary['study']}: {summary['model']}, seed {summary['seed']}", "",
             f"Facts: {n['train']} RL-train, {n['val']} validation, {n['test']} held-out test (pool {n['pool']}); "
             f"prompt and matching chosen on validation: `{summary['choice']['candidate']}` "
             f"(validation accuracy {100 * summary['choice']['val_accuracy']:.1f}%).", "",
             "| method | held-out accuracy | 95% CI | relative gain |", "|---|---|---|---|"]
    for row in summary["results"]:
        lines.append(f"| {row['method']} | {100 * row['accuracy']:.1f}% | [{100 * row['ci_low']:.1f}, "
                     f"{100 * row['ci_high']:.1f}] | {100 * row['relative_gain']:+.1f}% |")
    red = summary["grpo_redistribution"]
    lines += ["", f"GRPO: {red['n_new_greedy']} facts became greedy-correct, {red['from_tail']} of them "
              f"tail-correct in the base and {red['from_absent']} absent (criterion `{red['criterion']}`).", "",
              "| base \\ GRPO | greedy-correct | tail-correct | absent |", "|---|---|---|---|"]
    for b, row in summary["grpo_transitions"].items():
        lines.append(f"| {b} | " + " | ".join(str(v) for v in row.values()) + " |")
    return "\n".join(lines) + "\n"


def relation_markdown(by_relation: pd.DataFrame) -> str:
    """Held-out greedy accuracy per method (rows) and relation (columns, with the number of facts), as markdown."""
    if by_relation.empty:
        return ""
    relations = list(dict.fromkeys(by_relation["relation"]))
    n = by_relation.groupby("relation")["n"].first()
    lines = ["", "## Per relation", "", "Held-out greedy accuracy (facts per relation in the header).", "",
             "| method | " + " | ".join(f"{r} ({n[r]})" for r in relations) + " |",
             "|---|" + "---|" * len(relations)]
    for method, rows in by_relation.groupby("method", sort=False):
        acc = dict(zip(rows["relation"], rows["accuracy"]))
        lines.append(f"| {method} | " + " | ".join(f"{100 * acc[r]:.1f}%" for r in relations) + " |")
    return "\n".join(lines) + "\n"
