"""What ``score`` and ``compare`` check before their heavy imports (torch, transformers): checkpoint paths,
option values and the facts file, so a typo is reported in well under a second. Also where the facts of
``compare BASE.ckpt RL.ckpt`` come from when ``--facts`` is not given: the held-out facts the checkpoints
name."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from massshift.cli.common import _fail, _load_facts_or_fail

logger = logging.getLogger("massshift")


def checked_models(models: list[str], *, expand_rl: bool) -> list[str]:
    """``models`` with each path checked and, when ``expand_rl``, every RL argument that is a folder of
    checkpoints (``checkpoint-N/``, ``step-N/``) expanded into its checkpoints in step order."""
    from massshift.lm.specs import ModelLoadError, classify, expand, hub_folder

    out: list[str] = []
    for i, spec in enumerate(models):
        try:
            found = expand(spec)
        except ModelLoadError as err:
            _fail(str(err))
        if classify(spec) == "hub":  # cached? (huggingface_hub only, no torch; the network is never touched)
            try:
                hub_folder(spec)
            except ModelLoadError as err:
                _fail(str(err))
        if len(found) > 1 and (i == 0 or not expand_rl):
            _fail(f"{spec} is a folder of {len(found)} checkpoints ({Path(found[0]).name} ... "
                  f"{Path(found[-1]).name}); {'BASE' if expand_rl else 'MODEL'} must be one of them")
        if len(found) > 1:
            logger.info("%s: %d checkpoints, in step order: %s", spec, len(found),
                        ", ".join(Path(f).name for f in found))
        out.extend(found)
    return out


def checked_options(dtype: str, config: str | None, facts: Path | None = None) -> None:
    """``--dtype`` is a known name; ``--config``, when it is a path, exists; so does a ``--facts`` file."""
    from massshift.lm.specs import ModelLoadError, check_dtype, looks_like_path

    if facts is not None and not str(facts).startswith("hf:") and not facts.is_file():
        _fail(f"{facts}: no such file (--facts)")

    try:
        check_dtype(dtype)
    except ModelLoadError as err:
        _fail(str(err))
    if config and looks_like_path(config) and not Path(config).expanduser().exists():
        _fail(f"--config {config}: no such file or folder; give a model folder, a cached hub id or a named model")


def light_configs(template: str, chat: bool, instruction: str, answer_prefix: str, match: str,
                  chat_answer: bool = True) -> tuple[Any, Any]:
    """The prompt and matching settings (neither needs torch), checked now: (PromptConfig, MatchConfig)."""
    from massshift.data.matching import MatchConfig
    from massshift.lm.prefill import load_prefix_spec
    from massshift.lm.prompts import PromptConfig

    try:
        prompt = PromptConfig(template=template.replace("\\n", "\n"), chat=chat, instruction=instruction,
                              chat_answer=chat_answer, **load_prefix_spec(answer_prefix))
        return prompt, MatchConfig(mode=match)  # type: ignore[arg-type]
    except ValueError as err:
        _fail(f"{err} (--template, --chat, --instruction, --answer-prefix, --match)")


@dataclasses.dataclass(frozen=True)
class FactsChoice:
    """The facts a command scores, where they came from and why these (both go to config.yaml)."""

    table: Any
    source: str
    why: str
    builtin: bool = False  # the built-in default set: its prompt is chosen for the model's kind


def facts_for(facts: Path | None, specs: list[str], skip_invalid: bool = False) -> FactsChoice:
    """The ``--facts`` file or dataset, else the held-out facts the checkpoints name (massshift ``.ckpt``
    files, which must agree), else the built-in default set."""
    if facts is not None:
        return FactsChoice(_load_facts_or_fail(facts, skip_invalid), str(facts), "given with --facts")
    from massshift.data.facts import DEFAULT_FACTS_ABOUT, FactsError, facts_from_records, load_default_facts
    from massshift.lm.ckpt import held_out_facts
    from massshift.lm.specs import ModelLoadError

    named: dict[str, tuple[list[dict[str, Any]], str]] = {}
    for spec in specs:
        try:
            found = held_out_facts(spec)
        except ModelLoadError as err:
            _fail(str(err))
        if found:
            named[spec] = found
    if not named:
        table = load_default_facts()
        why = (("no checkpoint names" if len(specs) > 1 else "the checkpoint names no") + " held-out facts and "
               "--facts was not given (give --facts FILE or --facts hf:NAME[:SPLIT] to score your own)")
        logger.info("facts: %d facts from %s, because %s", len(table), DEFAULT_FACTS_ABOUT, why)
        return FactsChoice(table, DEFAULT_FACTS_ABOUT, why, builtin=True)
    ids = {spec: frozenset(str(r["fact_id"]) for r in recs) for spec, (recs, _) in named.items()}
    first = next(iter(ids))
    for spec, got in ids.items():
        if got != ids[first]:
            _fail(f"{first} and {spec} name different held-out facts ({len(ids[first])} and {len(got)} facts, "
                  f"{len(ids[first] & got)} in common); pass --facts to choose the facts to score")
    records, source = named[first]
    silent = [s for s in specs if s not in named]
    why = f"the held-out facts named in {', '.join(named)}" + (f" ({', '.join(silent)} name none)" if silent else "")
    logger.info("facts: %d facts, %s (%s)", len(records), why, source)
    try:
        table = facts_from_records(records, schema="canonical", source=f"{first} (held-out facts)")
    except FactsError as err:
        _fail(str(err))
    return FactsChoice(table, f"{source} (held out, from {first})", why)


def chat_for(config: Any, tokenizer: Any, label: str) -> Any:
    """``config`` asking through the tokenizer's chat template when it has one (the built-in default facts'
    prompt, chosen for the model's kind), else unchanged."""
    if not getattr(tokenizer, "chat_template", None):
        logger.info("%s: prompt: the plain template (the tokenizer has no chat template)", label)
        return config
    logger.info("%s: prompt: the tokenizer's chat template (--no-chat: the plain template)", label)
    return dataclasses.replace(config, prompt=dataclasses.replace(config.prompt, chat=True))
