"""``--judge MODEL`` of score and compare: load the judge once, hand it to scoring as the matcher, and
write what it did (``judge.json``: answers graded, verdicts changed, agreement with exact and contains)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from massshift.cli.common import _fail

logger = logging.getLogger("massshift")


def load_judge(spec: str | None, match: Any, dtype: str, device: str, cache_dir: Path | None) -> Any:
    """The ``Judge`` of ``spec`` (any checkpoint massshift loads), or None without ``--judge``."""
    if spec is None:
        return None
    from massshift.lm.judge import Judge
    from massshift.lm.loading import ModelLoadError, load_model
    from massshift.rundir import cache_root

    try:
        model, tok, info = load_model(spec, dtype=dtype, device=device)
        judge = Judge(model, tok, info.cache_key, match, cache_dir=cache_dir or cache_root())
    except (ModelLoadError, ValueError) as err:
        _fail(f"--judge {spec}: {err}")
    logger.info("judge: %s (%.1fM parameters, %s) grades the answers `%s` rejects; fingerprint %s", spec,
                info.n_params / 1e6, "chat template" if judge.chat else "plain prompt", match.mode, judge.fingerprint)
    return judge


def report_judge(judge: Any, out: Path) -> dict[str, Any] | None:
    """Save the judge's verdict cache and write ``out/judge.json``; returns its summary."""
    if judge is None:
        return None
    from massshift.rundir import write_json

    judge.save()
    summary = judge.summary()
    write_json(out / "judge.json", summary)
    pct = lambda v: "n/a" if v is None else f"{v:.1%}"  # noqa: E731
    logger.info("judge: %d distinct answers, %d graded by the judge, %d verdicts changed; agreement with exact "
                "%s, with contains %s (%s)", summary["n_answers"], summary["n_graded"], summary["n_changed"],
                pct(summary["agreement_exact"]), pct(summary["agreement_contains"]), out / "judge.json")
    return summary
