"""The never-seen control on any model: how often each criterion calls a fabricated fact held.

Control rows (``data.controls``, fact ids ``control:...``) are questions about invented subjects. Under each
criterion, the share of them labelled tail-correct is the criterion's false-positive rate on this model,
and the share answered greedy-correct is the model's guess rate. Both are set next to the real facts' rates
(see docs/criteria.md, "Controls").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import pandas as pd

from massshift.analysis.states import CRITERIA, StateConfig, assign_states, has_distractors, has_samples


def _criteria(tables: list[pd.DataFrame]) -> list[str]:
    out = ["logprob"]
    if all(has_samples(t) for t in tables):
        out.append("sampling")
    if all(has_distractors(t) for t in tables):
        out.append("chance")
    return [c for c in CRITERIA if c in out]


def _rates(table: pd.DataFrame, config: StateConfig, criteria: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"n": int(len(table)),
                           "greedy_share": float(table["greedy_correct"].astype(bool).mean()) if len(table) else None}
    out["tail_share"] = {c: float((assign_states(table, dataclasses.replace(config, criterion=c))
                                   == "tail-correct").mean()) if len(table) else None for c in criteria}
    return out


def control_summary(real: Mapping[str, pd.DataFrame], controls: Mapping[str, pd.DataFrame],
                    config: StateConfig) -> dict[str, Any] | None:
    """Per model label: the controls' and the real facts' greedy-correct share and tail-correct share per
    criterion (every criterion the tables allow). None when there are no controls."""
    if not controls or all(len(t) == 0 for t in controls.values()):
        return None
    tables = [*real.values(), *controls.values()]
    criteria = _criteria(tables)
    return {"n": int(len(next(iter(controls.values())))), "criteria": criteria,
            "models": {label: {"controls": _rates(controls[label], config, criteria),
                               "real": _rates(real[label], config, criteria)} for label in controls}}
