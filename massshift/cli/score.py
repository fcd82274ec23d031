"""``massshift score``, ``compare`` and ``figures``: score checkpoints, compare them, redraw figures."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from massshift.cli.checks import chat_for, checked_models, checked_options, facts_for, light_configs
from massshift.cli.common import _check_launch, _fail, _launch, _pct
from massshift.cli.judge import load_judge, report_judge
from massshift.cli.options import (
    Alpha,
    AnswerPrefix,
    BaseOpt,
    BatchSize,
    CacheDir,
    ChanceRatio,
    ChanceSpec,
    ChanceTop,
    ChatAnswer,
    ChatAuto,
    ConfigOpt,
    Controls,
    Criterion,
    Device,
    DeviceMap,
    Distractors,
    Dtype,
    Eps,
    FactsArg,
    Instruction,
    Judge,
    Match,
    MaxNew,
    NoProgress,
    NRef,
    Samples,
    Seed,
    Temperature,
    Template,
    Threads,
    TopP,
    TrustRemote,
)
from massshift.score import DEFAULT_DISTRACTORS

logger = logging.getLogger("massshift")


def _score_config(prompt, match, samples: int, temperature: float, top_p: float, max_new_tokens: int, seed: int,
                  batch_size: int):
    """The ScoreConfig of ``prompt`` and ``match`` (``checks.light_configs``) and the sampling and batch options."""
    from massshift.lm.logprobs import ScoringConfig
    from massshift.lm.sampling import GenerationConfig
    from massshift.score.table import ScoreConfig

    try:
        return ScoreConfig(
            prompt=prompt, match=match,
            generation=GenerationConfig(n_samples=samples, temperature=temperature, top_p=top_p,
                                        max_new_tokens=max_new_tokens, seed=seed, max_rows=max(256, batch_size)),
            scoring=ScoringConfig(batch_size=batch_size),
        )
    except ValueError as err:
        _fail(str(err))


def _state_config(criterion: str, alpha: float, n: int, eps: float | None, chance_ratio: float = 2.0,
                  chance_top: float = 0.25, chance_specificity: float = 0.95):
    from massshift.analysis.states import StateConfig

    try:
        return StateConfig(criterion=criterion, n=n, alpha=alpha, eps=eps, chance_ratio=chance_ratio,
                           chance_top=chance_top, chance_specificity=chance_specificity)
    except ValueError as err:
        _fail(str(err))




def _with_distractors(cfg, k: int | None, facts):
    """``cfg`` with ``distractors`` set: ``k`` if given, else DEFAULT_DISTRACTORS when some fact has a relation, else 0."""
    import dataclasses

    if k is None:
        has_relation = facts is not None and "relation" in facts.columns and bool(facts["relation"].notna().any())
        k = DEFAULT_DISTRACTORS if has_relation else 0
    try:
        return dataclasses.replace(cfg, distractors=k)
    except ValueError as err:
        _fail(str(err))


def _with_controls(facts, n: int | None, seed: int):
    """``facts`` with never-seen controls appended (``data.controls``); the default count where they can be made."""
    from massshift.data.controls import with_controls

    try:
        out = with_controls(facts, n, seed)
    except ValueError as err:
        _fail(str(err))
    if len(out) > len(facts):
        logger.info("never-seen controls: %d questions about invented subjects added (--controls 0: none)",
                    len(out) - len(facts))
    return out


def _score_one(spec: str, facts, config, state_config, label: str, *, dtype: str, device: str,
               base: str | None, config_dir: str | None, trust_remote_code: bool, device_map: str | None,
               cache_dir: Path | None, progress: bool, launch, out_table: Path | None = None,
               auto_chat: bool = False, matcher=None):
    """Load one checkpoint, score it (cached), free it; returns (table, ModelInfo, tokenizer, config).
    With ``auto_chat`` the prompt is the chat template when the tokenizer has one (``checks.chat_for``).

    Under ``accelerate launch`` every process scores its shard of the chunks into the cache; the
    main process then merges them and the others get a None table. With ``out_table`` the table
    is streamed to that parquet file chunk by chunk and its summary is returned instead
    (``score.table.write_score_table``: n_facts, accuracy, formats, ...).
    """
    import gc

    from massshift.lm.loading import ModelLoadError, load_model
    from massshift.progress import progress_bar
    from massshift.score.cache import ShardError
    from massshift.score.table import load_chunks, score_to_cache, write_score_table

    try:
        model, tok, info = load_model(spec, dtype=dtype, device=launch.device(device), base=base,
                                      config=config_dir,
                                      trust_remote_code=trust_remote_code, device_map=device_map)
    except ModelLoadError as err:
        _fail(str(err))
    logger.info("%s: %s (%s, %.1fM parameters)", label, spec, info.kind, info.n_params / 1e6)
    if auto_chat:
        config = chat_for(config, tok, label)
    shard = launch.shard if launch.distributed else None
    share = len(facts) if shard is None else -(-len(facts) // shard.count)
    what = f"scoring {label}" + (f" (shard {shard.index + 1}/{shard.count})" if shard else "")
    with progress_bar(share, what, enabled=(progress or None) and launch.shard.is_main) as advance:
        plan = score_to_cache(model, tok, facts, config, model_key=info.cache_key, cache_dir=cache_dir,
                              matcher=matcher, shard=shard, on_facts=advance)
    del model
    gc.collect()
    launch.wait()
    if not launch.shard.is_main:
        return None, info, tok, config
    from massshift.score.formats import format_line, format_summary

    try:
        if out_table is not None:
            table = write_score_table(plan, out_table, label, state_config.threshold)
            formats = table["formats"]
        else:
            table = load_chunks(plan, label)
            formats = format_summary(table, state_config.threshold)
    except ShardError as err:
        _fail(str(err))
    logger.info("answer format, %s", format_line(label, formats))
    if formats.get("warning"):
        logger.warning("%s: %s", label, formats["warning"])
    return table, info, tok, config


def score(
    model: Annotated[str, typer.Argument(help="Checkpoint: massshift .ckpt, HF folder, hub id (cached), PEFT adapter, TRL checkpoint-N/, Lightning .ckpt, torch.distributed.checkpoint folder, .gguf, state-dict file, or smollm2-135m.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")],
    facts: FactsArg = None,
    label: Annotated[str, typer.Option(help="Value of the table's model column.")] = "model",
    samples: Samples = 128, temperature: Temperature = 1.0, top_p: TopP = 1.0, max_new_tokens: MaxNew = 16,
    seed: Seed = 0, batch_size: BatchSize = 128, dtype: Dtype = "float32", device: Device = "cpu",
    threads: Threads = None, template: Template = "Q: {question}\\nA:", chat: ChatAuto = None,
    instruction: Instruction = "", chat_answer: ChatAnswer = True, answer_prefix: AnswerPrefix = "",
    match: Match = "exact", judge: Judge = None,
    criterion: Criterion = "auto", alpha: Alpha = 0.05, eps_n: NRef = 128, eps: Eps = None,
    distractors: Distractors = None, chance_ratio: ChanceRatio = 2.0, chance_top: ChanceTop = 0.25,
    chance_specificity: ChanceSpec = 0.95,
    cache_dir: CacheDir = None, trust_remote_code: TrustRemote = False, base: BaseOpt = None,
    config: ConfigOpt = None, device_map: DeviceMap = None, skip_invalid: bool = False, controls: Controls = None,
    no_progress: NoProgress = False,
) -> None:
    """Score one model on a facts file: writes OUT/scores.parquet, config.yaml, env.json.

    Under ``accelerate launch`` each process scores its shard of the facts; the main process
    merges them into the same table a single process writes.
    """
    (model,) = checked_models([model], expand_rl=False)  # before the heavy imports: a typo fails at once
    checked_models([judge] if judge else [], expand_rl=False)
    checked_options(dtype, config, facts)
    states = _state_config(criterion, alpha, eps_n, eps, chance_ratio, chance_top, chance_specificity)
    prompt, match_cfg = light_configs(template, bool(chat), instruction, answer_prefix, match, chat_answer)
    chosen = facts_for(facts, [model], skip_invalid)
    from massshift.lm.runtime import set_threads
    from massshift.rundir import init_run_dir

    launch = _launch()
    _check_launch(launch, device_map)
    n_threads = set_threads(launch.threads(threads))
    cfg = _score_config(prompt, match_cfg, samples, temperature, top_p, max_new_tokens, seed, batch_size)
    table_facts = _with_controls(chosen.table, controls, seed)
    cfg = _with_distractors(cfg, distractors, table_facts)
    settings = {"command": "score", "model": model, "facts": chosen.source, "facts_why": chosen.why, "label": label,
                "score": cfg, "states": states, "judge": judge, "dtype": dtype, "device": device,
                "threads": n_threads, "processes": launch.shard.count}
    if launch.shard.is_main:
        init_run_dir(out, settings, seed=seed, device=device)
    auto_chat = chat is None and chosen.builtin
    loaded_judge = load_judge(judge, match_cfg, dtype, device, cache_dir)
    table, info, _, used = _score_one(model, table_facts, cfg, states, label, dtype=dtype, device=device, base=base,
                                      config_dir=config, trust_remote_code=trust_remote_code, device_map=device_map,
                                      cache_dir=cache_dir, progress=not no_progress, launch=launch,
                                      out_table=out / "scores.parquet", auto_chat=auto_chat,
                                      matcher=loaded_judge)
    if table is None:  # not the main process: its shard is in the cache
        return
    from massshift.analysis.states import decide_auto
    from massshift.rundir import write_json, write_yaml

    if used is not cfg:  # the prompt was chosen for the model's kind: config.yaml says which
        write_yaml(out / "config.yaml", {**settings, "score": used})
    write_json(out / "model_info.json", info)
    report_judge(loaded_judge, out)
    crit = states.criterion
    if crit == "auto":
        crit = decide_auto(states, [table["formats"]] if table["formats_complete"] else [], table["chance"],
                           table["sampled"])[0]
    typer.echo(f"{out / 'scores.parquet'}: {table['n_facts']} facts, greedy accuracy {table['accuracy']:.3f} "
               f"(state criterion when compared: {crit})")


def compare(
    models: Annotated[list[str] | None, typer.Argument(help="BASE RL [RL2 ...]: checkpoints, in training order (a folder of checkpoint-N/ folders is its checkpoints in step order; omit with --base-scores/--rl-scores).")] = None,
    facts: FactsArg = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Report folder.")] = Path("report"),
    base_scores: Annotated[Path | None, typer.Option("--base-scores", help="Base score table (parquet) instead of a checkpoint.")] = None,
    rl_scores: Annotated[list[Path] | None, typer.Option("--rl-scores", help="RL score table(s) instead of checkpoints, in training order; labelled by file name (folder/name where two names are the same).")] = None,
    samples: Samples = 128, temperature: Temperature = 1.0, top_p: TopP = 1.0, max_new_tokens: MaxNew = 16,
    seed: Seed = 0, batch_size: BatchSize = 128, dtype: Dtype = "float32", device: Device = "cpu",
    threads: Threads = None, template: Template = "Q: {question}\\nA:", chat: ChatAuto = None,
    instruction: Instruction = "", chat_answer: ChatAnswer = True, answer_prefix: AnswerPrefix = "",
    match: Match = "exact", judge: Judge = None,
    criterion: Criterion = "auto", alpha: Alpha = 0.05, eps_n: NRef = 128, eps: Eps = None,
    distractors: Distractors = None, chance_ratio: ChanceRatio = 2.0, chance_top: ChanceTop = 0.25,
    chance_specificity: ChanceSpec = 0.95,
    n_boot: Annotated[int, typer.Option("--n-boot", help="Bootstrap resamples for CIs.")] = 2000,
    cache_dir: CacheDir = None, trust_remote_code: TrustRemote = False, base: BaseOpt = None,
    config: ConfigOpt = None, device_map: DeviceMap = None, controls: Controls = None,
    no_progress: NoProgress = False,
) -> None:
    """Compare BASE with one or more RL checkpoints on the same facts: matrix, statistics, figures, report.

    Under ``accelerate launch`` each process scores its shard of the facts for every checkpoint;
    the main process merges them and writes the report.
    """
    models = list(models or [])
    if base_scores is None and len(models) < 2 and not (models and rl_scores):
        _fail("give BASE and at least one RL checkpoint, or --base-scores and --rl-scores tables")
    for table_path in [base_scores, *(rl_scores or [])]:
        if table_path is not None and not table_path.is_file():
            _fail(f"{table_path}: no such score table (--base-scores, --rl-scores)")
    # before the heavy imports: a typo in a path or an option fails at once
    models = checked_models(models, expand_rl=base_scores is None)
    checked_models([judge] if judge else [], expand_rl=False)
    checked_options(dtype, config, facts)
    states = _state_config(criterion, alpha, eps_n, eps, chance_ratio, chance_top, chance_specificity)
    prompt, match_cfg = light_configs(template, bool(chat), instruction, answer_prefix, match, chat_answer)
    chosen = facts_for(facts, models) if models else None
    import pandas as pd

    from massshift.analysis.estimators import StatsConfig
    from massshift.lm.loading import check_same_tokenizer
    from massshift.lm.runtime import set_threads
    from massshift.report.compare import CompareConfig, write_compare_report
    from massshift.rundir import write_parquet
    from massshift.score.schema import ScoreTableError

    launch = _launch()
    _check_launch(launch, device_map)
    n_threads = set_threads(launch.threads(threads))
    cfg = _score_config(prompt, match_cfg, samples, temperature, top_p, max_new_tokens, seed, batch_size)
    loaded = {"dtype": dtype, "device": device, "base": base, "config_dir": config,
              "trust_remote_code": trust_remote_code, "device_map": device_map, "cache_dir": cache_dir,
              "progress": not no_progress, "launch": launch,
              "matcher": load_judge(judge, match_cfg, dtype, device, cache_dir) if models else None}
    table_facts = _with_controls(chosen.table, controls, seed) if chosen is not None else None
    cfg = _with_distractors(cfg, distractors, table_facts)
    specs = list(models)
    tables: list[tuple[str, pd.DataFrame]] = []
    infos = []
    if base_scores is not None:
        tables.append(("base", pd.read_parquet(base_scores)))
    else:
        if table_facts is None:
            _fail("--facts is needed to score checkpoints")
        auto_chat = chat is None and chosen is not None and chosen.builtin
        t, info, tok, cfg = _score_one(specs.pop(0), table_facts, cfg, states, "base", **loaded,
                                       auto_chat=auto_chat)  # the RL models are asked the same way
        tables.append(("base", t))
        infos.append((info, tok))
    for label, path in zip(_score_labels(rl_scores or []), rl_scores or []):
        tables.append((label, pd.read_parquet(path)))
    for i, spec in enumerate(specs):
        if table_facts is None:
            _fail("--facts is needed to score checkpoints")
        label = "rl" if len(specs) == 1 else f"rl{i + 1}:{Path(spec).name}"
        t, info, tok, _ = _score_one(spec, table_facts, cfg, states, label, **loaded)
        if infos and launch.shard.is_main:
            from massshift.lm.loading import ModelLoadError

            try:
                check_same_tokenizer(infos[0][0], infos[0][1], info, tok)
            except ModelLoadError as err:
                _fail(str(err))
        infos.append((info, tok))
        tables.append((label, t))
    if not launch.shard.is_main:  # its shards are in the cache; the main process writes the report
        return
    out.mkdir(parents=True, exist_ok=True)
    judged = report_judge(loaded["matcher"], out)
    for label, t in tables:
        write_parquet(out / f"scores_{label.replace(':', '_').replace('/', '_')}.parquet", t)
    ccfg = CompareConfig(states=states, stats=StatsConfig(n_boot=n_boot, seed=seed))
    extra = {"command": "compare", "models": models, "facts": chosen and chosen.source,
             "facts_why": chosen and chosen.why, "judge": judge and {"model": judge, **(judged or {})},
             "score": cfg, "threads": n_threads}
    try:
        summary = write_compare_report(tables[0][1], tables[1:], out, ccfg, extra_config=extra, seed=seed)
    except ScoreTableError as err:
        _fail(str(err))
    _echo_headline(summary, out)


def _echo_headline(summary: dict, out: Path) -> None:
    acc, gain, red = summary["accuracy"], summary["gain"], summary["redistribution"]
    typer.echo(f"report: {out / 'report.md'}")
    typer.echo(f"greedy accuracy: base {_pct(acc['base']['value'])} -> rl {_pct(acc['rl']['value'])} "
               f"(absolute {_points(gain['absolute']['value'])}, relative {_pct(gain['relative']['value'], True)})")
    typer.echo(f"newly greedy-correct facts: {red['n_new_greedy']}; tail-correct in the base: {red['from_tail']} "
               f"({_pct(red['share_tail']['value'])}), absent: {red['from_absent']} ({red['criterion']} criterion)")


def _points(value: float | None) -> str:
    """An absolute change of a share, in percentage points: ``+17.2 points``."""
    return "n/a" if value is None else f"{100 * value:+.1f} points"


def _score_labels(paths: list[Path]) -> list[str]:
    """A label per --rl-scores table: the file's stem, or folder/stem where two stems are the same."""
    stems = [Path(p).stem for p in paths]
    if len(set(stems)) == len(stems):
        return stems
    labels = [f"{Path(p).parent.name}/{Path(p).stem}" for p in paths]
    if len(set(labels)) < len(labels):
        seen: dict[str, Path] = {}
        for label, p in zip(labels, paths):
            if label in seen:
                _fail(f"--rl-scores {seen[label]} and {p} would get the same label {label!r}: give tables with "
                      "different file or folder names")
            seen[label] = Path(p)
    return labels


def figures(
    run_dir: Annotated[Path, typer.Argument(help="A compare run directory.")],
    copy_to: Annotated[Path | None, typer.Option("--copy-to", help="Also copy the PNGs here (e.g. figures/).")] = None,
) -> None:
    """Re-draw every figure of a compare run from its tables (no model is loaded)."""
    import shutil

    from massshift.report.plots import draw_all

    paths = draw_all(run_dir)
    if copy_to is not None:
        copy_to.mkdir(parents=True, exist_ok=True)
        for p in paths:
            if str(p).endswith(".png"):
                shutil.copy(p, copy_to / Path(p).name)
    typer.echo(f"{len(paths)} figure files in {run_dir / 'figures'}")
