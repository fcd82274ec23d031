"""The ``massshift`` command line: thin typer wrappers that parse, call library functions, save.

Heavy imports (torch, transformers) happen inside command bodies, so ``--help``
is instant. Logging and progress bars are set up here, once.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated

import typer

from massshift.score.distractors import DEFAULT_DISTRACTORS  # noqa: E402  (pandas: ~0.5 s on --help; see cli brief)

app = typer.Typer(
    name="massshift", add_completion=False, rich_markup_mode="rich", no_args_is_help=True,
    help="Did RL teach a language model new facts, or move probability mass onto facts it already held?",
)
logger = logging.getLogger("massshift")


def _setup_logging(verbose: bool) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s",
                        handlers=[RichHandler(show_path=False, rich_tracebacks=False)], force=True)
    for noisy in ("httpx", "urllib3", "filelock", "fontTools", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # transformers' own "Loading weights" bars (read when it is first imported); massshift draws its own
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False) -> None:
    _setup_logging(verbose)


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(2)


# Options shared by score and compare (one definition each) -------------------------------------------
Samples = Annotated[int, typer.Option("--samples", "-n", help="Samples per fact (0: greedy only). Paper: 128.")]
Temperature = Annotated[float, typer.Option(help="Sampling temperature (0: greedy).")]
TopP = Annotated[float, typer.Option("--top-p", help="Nucleus truncation (1.0: none).")]
MaxNew = Annotated[int, typer.Option("--max-new-tokens", help="Longest answer generated, in tokens.")]
Seed = Annotated[int, typer.Option(help="Seed; samples are seeded per (seed, fact_id).")]
BatchSize = Annotated[int, typer.Option("--batch-size", help="Rows per forward pass: teacher-forcing continuations (aliases, distractors), and decoding rows, facts x (1 + samples), at least 256. Thousands on a GPU. Changes numbers only by float round-off.")]
Dtype = Annotated[str, typer.Option(help="float32, bfloat16 or float16.")]
Device = Annotated[str, typer.Option(help="cpu, cuda, cuda:1, mps ...")]
Threads = Annotated[int | None, typer.Option(help="Torch CPU threads (default: measured best for this machine).")]
Template = Annotated[str, typer.Option(help="Prompt template with {question}.")]
Chat = Annotated[bool, typer.Option("--chat/--no-chat", help="Use the tokenizer's chat template.")]
Instruction = Annotated[str, typer.Option(help="With --chat: a line before the question.")]
AnswerPrefix = Annotated[str, typer.Option("--answer-prefix", help="Answer prefill (the bare answer is scored after it; default none): TEXT (fixed; may use {subject}), @FILE.yaml (relation: template, optional default:), or self (the model's own greedy lead-in before the first alias or distractor).")]
Match = Annotated[str, typer.Option(help="exact (default) or contains (for models that answer in sentences).")]
Criterion = Annotated[str, typer.Option(help="Tail-correct criterion: auto (chance when distractors were scored, else logprob), logprob (p(gold) >= eps), sampling (>= 1 correct sample) or chance (p(gold) >= eps and the gold beats its distractors).")]
Distractors = Annotated[int | None, typer.Option("--distractors", help=f"Distractor answers (same relation) scored per fact for the chance criterion; 0: none. Default: {DEFAULT_DISTRACTORS} when the facts have a relation, else 0.")]
ChanceRatio = Annotated[float, typer.Option("--chance-ratio", help="chance: p(gold) must be this many times the median distractor's.")]
ChanceTop = Annotated[float, typer.Option("--chance-top", help="chance: the gold must rank in this top share of gold + distractors.")]
ChanceSpec = Annotated[float, typer.Option("--chance-specificity", help="chance: the gold must score higher on its own subject than on this share of other subjects' prompts (value-prior test; 0: off).")]
Alpha = Annotated[float, typer.Option(help="eps = -ln(alpha)/n when --eps is not given.")]
NRef = Annotated[int, typer.Option("--eps-n", help="n in eps = -ln(alpha)/n (paper: 128).")]
Eps = Annotated[float | None, typer.Option(help="Probability line for tail-correct (overrides alpha and --eps-n).")]
CacheDir = Annotated[Path | None, typer.Option("--cache-dir", help="Score cache root (default $MASSSHIFT_CACHE or ~/.cache/massshift).")]
TrustRemote = Annotated[bool, typer.Option("--trust-remote-code", help="Allow code shipped with a checkpoint (off by default).")]
BaseOpt = Annotated[str | None, typer.Option("--base", help="Base model of a PEFT adapter (default: from adapter_config.json).")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="Config folder for a bare state-dict file.")]
DeviceMap = Annotated[str | None, typer.Option("--device-map", help="'auto' to spread a large model over devices.")]
NoProgress = Annotated[bool, typer.Option("--no-progress", help="Hide progress bars.")]


def _score_config(samples: int, temperature: float, top_p: float, max_new_tokens: int, seed: int,
                  batch_size: int, template: str, chat: bool, instruction: str, answer_prefix: str,
                  match: str):
    from massshift.data.matching import MatchConfig
    from massshift.lm.logprobs import ScoringConfig
    from massshift.lm.prefill import load_prefix_spec
    from massshift.lm.prompts import PromptConfig
    from massshift.lm.sampling import GenerationConfig
    from massshift.score.table import ScoreConfig

    try:
        return ScoreConfig(
            prompt=PromptConfig(template=template.replace("\\n", "\n"), chat=chat, instruction=instruction,
                                **load_prefix_spec(answer_prefix)),
            match=MatchConfig(mode=match),  # type: ignore[arg-type]
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


def _load_facts_or_fail(path: Path, skip_invalid: bool = False):
    from massshift.data.facts import FactsError, load_facts

    try:
        return load_facts(path, skip_invalid=skip_invalid)
    except FactsError as err:
        _fail(str(err))


def _launch():
    """This process's place in an ``accelerate launch`` run (a lone process otherwise)."""
    from massshift.score.cache import Launch, ShardError

    try:
        return Launch()
    except ShardError as err:
        _fail(str(err))


def _check_launch(launch, device_map: str | None) -> None:
    if launch.distributed and device_map:
        _fail("--device-map spreads one model over every device of one process; it cannot be combined with "
              "several processes (accelerate launch --num_processes > 1). Use one or the other.")


def _score_one(spec: str, facts, config, state_config, label: str, *, dtype: str, device: str,
               base: str | None, config_dir: Path | None, trust_remote_code: bool, device_map: str | None,
               cache_dir: Path | None, progress: bool, launch, out_table: Path | None = None):
    """Load one checkpoint, score it (cached), free it; returns (table, ModelInfo, tokenizer).

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
                                      config=str(config_dir) if config_dir else None,
                                      trust_remote_code=trust_remote_code, device_map=device_map)
    except ModelLoadError as err:
        _fail(str(err))
    logger.info("%s: %s (%s, %.1fM parameters)", label, spec, info.kind, info.n_params / 1e6)
    shard = launch.shard if launch.distributed else None
    share = len(facts) if shard is None else -(-len(facts) // shard.count)
    what = f"scoring {label}" + (f" (shard {shard.index + 1}/{shard.count})" if shard else "")
    with progress_bar(share, what, enabled=(progress or None) and launch.shard.is_main) as advance:
        plan = score_to_cache(model, tok, facts, config, model_key=info.cache_key,
                              cache_dir=cache_dir, shard=shard, on_facts=advance)
    del model
    gc.collect()
    launch.wait()
    if not launch.shard.is_main:
        return None, info, tok
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
    return table, info, tok


@app.command()
def score(
    model: Annotated[str, typer.Argument(help="Checkpoint: HF folder, hub id (cached), PEFT adapter, .gguf, state-dict file, or smollm2-135m.")],
    facts: Annotated[Path, typer.Option("--facts", "-f", help="Facts file (.jsonl, .json, .csv, .parquet).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")],
    label: Annotated[str, typer.Option(help="Value of the table's model column.")] = "model",
    samples: Samples = 128, temperature: Temperature = 1.0, top_p: TopP = 1.0, max_new_tokens: MaxNew = 16,
    seed: Seed = 0, batch_size: BatchSize = 128, dtype: Dtype = "float32", device: Device = "cpu",
    threads: Threads = None, template: Template = "Q: {question}\\nA:", chat: Chat = False,
    instruction: Instruction = "", answer_prefix: AnswerPrefix = "", match: Match = "exact",
    criterion: Criterion = "auto", alpha: Alpha = 0.05, eps_n: NRef = 128, eps: Eps = None,
    distractors: Distractors = None, chance_ratio: ChanceRatio = 2.0, chance_top: ChanceTop = 0.25,
    chance_specificity: ChanceSpec = 0.95,
    cache_dir: CacheDir = None, trust_remote_code: TrustRemote = False, base: BaseOpt = None,
    config: ConfigOpt = None, device_map: DeviceMap = None, skip_invalid: bool = False,
    no_progress: NoProgress = False,
) -> None:
    """Score one model on a facts file: writes OUT/scores.parquet, config.yaml, env.json.

    Under ``accelerate launch`` each process scores its shard of the facts; the main process
    merges them into the same table a single process writes.
    """
    from massshift.lm.loading import set_threads
    from massshift.rundir import init_run_dir

    launch = _launch()
    _check_launch(launch, device_map)
    n_threads = set_threads(launch.threads(threads))
    cfg = _score_config(samples, temperature, top_p, max_new_tokens, seed, batch_size, template, chat,
                        instruction, answer_prefix, match)
    states = _state_config(criterion, alpha, eps_n, eps, chance_ratio, chance_top, chance_specificity)
    table_facts = _load_facts_or_fail(facts, skip_invalid)
    cfg = _with_distractors(cfg, distractors, table_facts)
    settings = {"command": "score", "model": model, "facts": str(facts), "label": label, "score": cfg,
                "states": states, "dtype": dtype, "device": device, "threads": n_threads,
                "processes": launch.shard.count}
    if launch.shard.is_main:
        init_run_dir(out, settings, seed=seed, device=device)
    table, info, _ = _score_one(model, table_facts, cfg, states, label, dtype=dtype, device=device, base=base,
                                config_dir=config, trust_remote_code=trust_remote_code, device_map=device_map,
                                cache_dir=cache_dir, progress=not no_progress, launch=launch,
                                out_table=out / "scores.parquet")
    if table is None:  # not the main process: its shard is in the cache
        return
    from massshift.analysis.states import decide_auto
    from massshift.rundir import write_json

    write_json(out / "model_info.json", info)
    crit = states.criterion
    if crit == "auto":
        crit = decide_auto(states, [table["formats"]] if table["formats_complete"] else [], table["chance"],
                           table["sampled"])[0]
    typer.echo(f"{out / 'scores.parquet'}: {table['n_facts']} facts, greedy accuracy {table['accuracy']:.3f} "
               f"(state criterion when compared: {crit})")


@app.command()
def compare(
    models: Annotated[list[str] | None, typer.Argument(help="BASE RL [RL2 ...]: checkpoints (omit with --base-scores/--rl-scores).")] = None,
    facts: Annotated[Path | None, typer.Option("--facts", "-f", help="Facts file scored for both models.")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Report folder.")] = Path("report"),
    base_scores: Annotated[Path | None, typer.Option("--base-scores", help="Base score table (parquet) instead of a checkpoint.")] = None,
    rl_scores: Annotated[list[Path] | None, typer.Option("--rl-scores", help="RL score table(s) instead of checkpoints.")] = None,
    samples: Samples = 128, temperature: Temperature = 1.0, top_p: TopP = 1.0, max_new_tokens: MaxNew = 16,
    seed: Seed = 0, batch_size: BatchSize = 128, dtype: Dtype = "float32", device: Device = "cpu",
    threads: Threads = None, template: Template = "Q: {question}\\nA:", chat: Chat = False,
    instruction: Instruction = "", answer_prefix: AnswerPrefix = "", match: Match = "exact",
    criterion: Criterion = "auto", alpha: Alpha = 0.05, eps_n: NRef = 128, eps: Eps = None,
    distractors: Distractors = None, chance_ratio: ChanceRatio = 2.0, chance_top: ChanceTop = 0.25,
    chance_specificity: ChanceSpec = 0.95,
    n_boot: Annotated[int, typer.Option("--n-boot", help="Bootstrap resamples for CIs.")] = 2000,
    cache_dir: CacheDir = None, trust_remote_code: TrustRemote = False, base: BaseOpt = None,
    config: ConfigOpt = None, device_map: DeviceMap = None, no_progress: NoProgress = False,
) -> None:
    """Compare BASE with one or more RL checkpoints on the same facts: matrix, statistics, figures, report.

    Under ``accelerate launch`` each process scores its shard of the facts for every checkpoint;
    the main process merges them and writes the report.
    """
    import pandas as pd

    from massshift.analysis.estimators import StatsConfig
    from massshift.lm.loading import check_same_tokenizer, set_threads
    from massshift.report.compare import CompareConfig, write_compare_report
    from massshift.rundir import write_parquet
    from massshift.score.schema import ScoreTableError

    models = list(models or [])
    if base_scores is None and len(models) < 2 and not (models and rl_scores):
        _fail("give BASE and at least one RL checkpoint, or --base-scores and --rl-scores tables")
    launch = _launch()
    _check_launch(launch, device_map)
    n_threads = set_threads(launch.threads(threads))
    cfg = _score_config(samples, temperature, top_p, max_new_tokens, seed, batch_size, template, chat,
                        instruction, answer_prefix, match)
    states = _state_config(criterion, alpha, eps_n, eps, chance_ratio, chance_top, chance_specificity)
    loaded = {"dtype": dtype, "device": device, "base": base, "config_dir": config,
              "trust_remote_code": trust_remote_code, "device_map": device_map, "cache_dir": cache_dir,
              "progress": not no_progress, "launch": launch}
    table_facts = _load_facts_or_fail(facts) if facts is not None else None
    cfg = _with_distractors(cfg, distractors, table_facts)
    specs = list(models)
    tables: list[tuple[str, pd.DataFrame]] = []
    infos = []
    if base_scores is not None:
        tables.append(("base", pd.read_parquet(base_scores)))
    else:
        if table_facts is None:
            _fail("--facts is needed to score checkpoints")
        t, info, tok = _score_one(specs.pop(0), table_facts, cfg, states, "base", **loaded)
        tables.append(("base", t))
        infos.append((info, tok))
    for path in rl_scores or []:
        tables.append((Path(path).stem, pd.read_parquet(path)))
    for i, spec in enumerate(specs):
        if table_facts is None:
            _fail("--facts is needed to score checkpoints")
        label = "rl" if len(specs) == 1 else f"rl{i + 1}:{Path(spec).name}"
        t, info, tok = _score_one(spec, table_facts, cfg, states, label, **loaded)
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
    for label, t in tables:
        write_parquet(out / f"scores_{label.replace(':', '_').replace('/', '_')}.parquet", t)
    ccfg = CompareConfig(states=states, stats=StatsConfig(n_boot=n_boot, seed=seed))
    extra = {"command": "compare", "models": models, "facts": str(facts) if facts else None,
             "score": cfg, "threads": n_threads}
    try:
        summary = write_compare_report(tables[0][1], tables[1:], out, ccfg, extra_config=extra, seed=seed)
    except ScoreTableError as err:
        _fail(str(err))
    _echo_headline(summary, out)


def _pct(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.1%}" if signed else f"{value:.1%}"


def _echo_headline(summary: dict, out: Path) -> None:
    acc, gain, red = summary["accuracy"], summary["gain"], summary["redistribution"]
    typer.echo(f"report: {out / 'report.md'}")
    typer.echo(f"greedy accuracy: base {_pct(acc['base']['value'])} -> rl {_pct(acc['rl']['value'])} "
               f"(absolute {_pct(gain['absolute']['value'], True)}, relative {_pct(gain['relative']['value'], True)})")
    typer.echo(f"newly greedy-correct facts: {red['n_new_greedy']}; tail-correct in the base: {red['from_tail']} "
               f"({_pct(red['share_tail']['value'])}), absent: {red['from_absent']} ({red['criterion']} criterion)")


@app.command()
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


@app.command()
def split(
    file: Annotated[Path, typer.Argument(help="Facts file to split.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")],
    test_size: Annotated[float, typer.Option("--test-size", help="Share of facts on the test side.")] = 0.5,
    seed: Seed = 0,
    group_by: Annotated[str | None, typer.Option("--group-by", help="Also keep facts sharing this column (e.g. subject) on one side.")] = None,
) -> None:
    """Fact-level train/test split: no fact (or paraphrase of it) on both sides; writes an audit."""
    from massshift.data.split import split_facts, verify_disjoint, write_split

    facts = _load_facts_or_fail(file)
    try:
        result = split_facts(facts, test_size=test_size, seed=seed, group_by=group_by)
    except ValueError as err:
        _fail(str(err))
    overlaps = verify_disjoint(result.train, result.test)
    if overlaps:
        _fail(f"split left {len(overlaps)} overlapping facts; this is a bug, please report it")
    write_split(result, out, {"command": "split", "file": str(file), "test_size": test_size, "seed": seed,
                              "group_by": group_by})
    typer.echo(f"{out}: train {len(result.train)}, test {len(result.test)} facts, 0 overlapping")


@app.command()
def dedup(
    train: Annotated[Path, typer.Argument(help="Train facts file.")],
    test: Annotated[Path, typer.Argument(help="Test facts file to clean.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")],
) -> None:
    """Remove from TEST every fact that overlaps TRAIN (the paper's fact-level deduplication)."""
    from massshift.data.split import dedup as dedup_facts
    from massshift.data.split import write_dedup

    result = dedup_facts(_load_facts_or_fail(train), _load_facts_or_fail(test))
    write_dedup(result, out, {"command": "dedup", "train": str(train), "test": str(test)})
    typer.echo(f"{out}: kept {len(result.test)} test facts, removed {len(result.audit)}")


@app.command()
def world(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("runs/world"),
    people: Annotated[int, typer.Option(help="Invented people.")] = 800,
    qa_share: Annotated[float, typer.Option("--qa-share", help="Share of people with QA lines in the corpus.")] = 0.3,
    default_noise: Annotated[float, typer.Option("--default-noise", help="Share of QA lines answered with a default value.")] = 0.1,
    default_kind: Annotated[str, typer.Option("--default-kind", help="popular (most popular value) or nobody (a value nobody has).")] = "popular",
    seed: Seed = 0,
) -> None:
    """Write a synthetic fact world: corpus.txt, facts.jsonl, a word-level tokenizer, config.yaml."""
    from massshift.synthetic.world import WorldConfig, build_world, write_world

    try:
        cfg = WorldConfig(seed=seed, n_people=people, qa_share=qa_share, default_noise=default_noise,
                          default_kind=default_kind)  # type: ignore[arg-type]
    except ValueError as err:
        _fail(str(err))
    w = build_world(cfg)
    write_world(w, out)
    typer.echo(f"{out}: {len(w.facts)} facts about {cfg.n_people} people, corpus of {len(w.corpus.split())} words")


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder (stages are reused when unchanged).")] = Path("runs/demo"),
    quick: Annotated[bool, typer.Option("--quick", help="Small world and short runs (about a minute; for tests).")] = False,
    seed: Seed = 0,
    threads: Threads = None,
    no_progress: NoProgress = False,
) -> None:
    """The whole study on a synthetic world: world, pretraining, split, GRPO, SFT, compare, report."""
    from massshift.studies.demo import DemoConfig, run_demo

    summary = run_demo(out, DemoConfig(seed=seed, quick=quick, threads=threads), progress=not no_progress)
    rl, sft = summary["rl"], summary["sft"]
    typer.echo(f"report: {summary['report']}")
    typer.echo(f"held-out greedy accuracy: base {_pct(rl['base_accuracy'])}, GRPO {_pct(rl['accuracy'])}, "
               f"SFT {_pct(sft['accuracy'])}")
    typer.echo(f"relative gain: GRPO {_pct(rl['relative_gain'], True)}, SFT {_pct(sft['relative_gain'], True)}")
    typer.echo(f"redistribution share (GRPO, {rl['criterion']} criterion): {rl['from_tail']} of {rl['n_new_greedy']} "
               f"newly greedy-correct facts were tail-correct in the base ({_pct(rl['redistribution_share'])}); "
               f"{rl['from_absent']} were absent")
    typer.echo("held-out greedy accuracy with 95% CIs (results.csv):")
    for row in summary["results"]:
        typer.echo(f"  {row['method']:>18}: {_pct(row['accuracy'])} [{_pct(row['ci_low'])}, {_pct(row['ci_high'])}]")


def main() -> None:
    """Console-script entry point."""
    import massshift.cli.attribute  # noqa: F401  (registers `attribute`)
    import massshift.cli.studies  # noqa: F401  (registers `facts` and `study`)
    import massshift.cli.train  # noqa: F401  (registers `train` and `baselines`)

    app()


if __name__ == "__main__":
    main()
