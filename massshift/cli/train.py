"""``massshift train rl|sft|rft|dpo`` and ``massshift baselines``: thin wrappers over massshift.train and baselines.

Every field of a trainer's config dataclass can be set: from a YAML file
(``--config``), from the named options below, or as ``--set field=value``
(later wins). The run directory's config.yaml records the result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from massshift.cli.common import _fail, _load_facts_or_fail, _pct
from massshift.cli.options import (
    Chat,
    ConfigYaml,
    EvalEvery,
    EvalOpt,
    FactsOpt,
    Instruction,
    Judge,
    LoraR,
    Lr,
    MatchOpt,
    MaxCompletion,
    ModelArg,
    NoProgress,
    OutOpt,
    Resume,
    SaveEvery,
    SeedGiven,
    SetOpt,
    StepBatch,
    Steps,
    Threads,
    WriteCkpt,
)

train_app = typer.Typer(no_args_is_help=True, help="Built-in trainers (GRPO, SFT, RFT, DPO) that write checkpoints for compare.")



def _settings(cls: Any, config: Path | None, named: dict[str, Any], sets: list[str] | None) -> Any:
    """Build ``cls`` from YAML, then the named options that were given, then ``--set`` pairs."""
    data: dict[str, Any] = {}
    if config is not None:
        loaded = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
        if not isinstance(loaded, dict):
            _fail(f"{config}: expected a YAML mapping of {cls.__name__} settings")
        data.update(loaded)
    data.update({k: v for k, v in named.items() if v is not None})
    for item in sets or []:
        if "=" not in item:
            _fail(f"--set expects field=value, got {item!r}")
        key, value = item.split("=", 1)
        data[key.strip().replace("-", "_")] = yaml.safe_load(value)
    try:
        return cls.from_dict(data)
    except (ValueError, TypeError) as err:
        _fail(str(err))


def _load(model: str, threads: int | None) -> tuple[Any, Any]:
    from massshift.lm.loading import ModelLoadError, load_model
    from massshift.lm.runtime import set_threads

    set_threads(threads)
    try:
        m, tok, _ = load_model(model)
    except ModelLoadError as err:
        _fail(str(err))
    return m.train(), tok


def _prompt(chat: bool, instruction: str) -> Any:
    from massshift.lm.prompts import PromptConfig

    return PromptConfig(chat=chat, instruction=instruction)


def _write_ckpts(model: str, result: Any, out: Path, held: Any, name: str) -> None:
    """``OUT/base.ckpt`` and ``OUT/<name>.ckpt``: the model trained from and the final model, each one
    self-describing file (``massshift.lm.ckpt``) carrying the --eval-facts as its held-out facts, so
    ``massshift compare base.ckpt rl.ckpt`` in OUT needs no other argument."""
    from massshift.lm.ckpt import write_ckpt
    from massshift.lm.loading import ModelLoadError, load_model

    source = "the --eval-facts of `massshift train`"
    for label, spec in (("base", model), (name, str(result.final_path))):
        try:
            m, tok, _ = load_model(spec)
        except ModelLoadError as err:
            _fail(str(err))
        path = write_ckpt(out / f"{label}.ckpt", m, tok, held, facts_source=source, meta={"model": spec, "role": label})
        typer.echo(f"{label}: {path}" + ("" if held is not None else " (no held-out facts: give --eval-facts "
                                                                      "to carry them)"))


def _judge(spec: str | None, cfg: Any, train: Any) -> tuple[Any, Any]:
    """(the judge, the reward it gives) for ``--judge`` of a trainer, or (None, None): the judge grades what
    the string matcher rejects; under ``contains`` with relations an answer naming another value of its
    relation earns nothing before the judge is asked (``lm.judge.judge_reward``)."""
    if spec is None:
        return None, None
    from massshift.cli.judge import load_judge
    from massshift.data.matching import relation_values
    from massshift.lm.judge import judge_reward

    judge = load_judge(spec, cfg.match_config(), "float32", "cpu", None)
    hedging = cfg.match_mode == "contains" and "relation" in train.columns and train["relation"].notna().all()
    return judge, judge_reward(judge, relation_values(train) if hedging else None)


def _report_judge(judge: Any, out: Path) -> None:
    if judge is not None:
        from massshift.cli.judge import report_judge

        report_judge(judge, out)


def _train_on_samples(fn: Any, name: str, cfg: Any, model: str, facts: Path, eval_facts: Path | None, out: Path,
                      threads: int | None, chat: bool, instruction: str, judge: str | None, no_progress: bool,
                      resume: bool, ckpt: bool) -> None:
    """RFT and DPO: load, train on the model's own samples judged by the matcher or ``--judge``, report."""
    train = _load_facts_or_fail(facts)
    grader, reward = _judge(judge, cfg, train)
    m, tok = _load(model, threads)
    held = _load_facts_or_fail(eval_facts) if eval_facts else None
    result = fn(m, tok, train, out, cfg, eval_facts=held, prompt=_prompt(chat, instruction),
                matcher=(lambda t, a: reward(t, a) > 0) if reward else None, progress=not no_progress, resume=resume)
    _report_judge(grader, out)
    _report(result)
    if ckpt:
        _write_ckpts(model, result, out, held, name)


def _report(result: Any) -> None:
    log = result.log
    typer.echo(f"final model: {result.final_path}")
    for col in ("reward_mean", "eval_accuracy", "loss"):
        if col in log.columns and log[col].notna().any():
            vals = log[col].dropna()
            typer.echo(f"{col}: {vals.iloc[0]:.3f} -> {vals.iloc[-1]:.3f}")


@train_app.command("rl")
def train_rl(
    model: ModelArg, facts: FactsOpt, out: OutOpt, eval_facts: EvalOpt = None, config: ConfigYaml = None,
    set_: SetOpt = None, steps: Steps = None, batch_size: StepBatch = None,
    num_generations: Annotated[int | None, typer.Option("--num-generations", "-G", help="Completions per question.")] = None,
    lr: Lr = None, beta: Annotated[float | None, typer.Option(help="KL weight (0: no reference model).")] = None,
    scale_rewards: Annotated[str | None, typer.Option("--scale-rewards", help="group or none (Dr. GRPO).")] = None,
    temperature: Annotated[float | None, typer.Option(help="Sampling temperature.")] = None,
    max_new_tokens: MaxCompletion = None, save_every: SaveEvery = None, eval_every: EvalEvery = None,
    match: MatchOpt = None, lora_r: LoraR = None, seed: SeedGiven = None, threads: Threads = None,
    engine: Annotated[str, typer.Option(help="builtin, or trl (TRL's GRPOTrainer; needs the trl extra).")] = "builtin",
    chat: Chat = False, instruction: Instruction = "", resume: Resume = False, no_progress: NoProgress = False,
    ckpt: WriteCkpt = True, judge: Judge = None,
) -> None:
    """GRPO with a binary correctness reward (massshift.train.grpo; every GRPOConfig field is settable); with
    --judge the reward is the judge's verdict (OUT/judge.json counts what it changed)."""
    from massshift.train.grpo import GRPOConfig

    named = {"steps": steps, "batch_size": batch_size, "num_generations": num_generations, "lr": lr, "beta": beta,
             "scale_rewards": scale_rewards, "temperature": temperature, "max_new_tokens": max_new_tokens,
             "save_every": save_every, "eval_every": eval_every, "match_mode": match, "lora_r": lora_r,
             "seed": seed, "threads": threads}
    cfg = _settings(GRPOConfig, config, named, set_)
    train = _load_facts_or_fail(facts)
    held = _load_facts_or_fail(eval_facts) if eval_facts else None
    if engine not in ("builtin", "trl"):
        _fail(f"--engine must be builtin or trl, got {engine!r}")
    grader, reward = _judge(judge, cfg, train)
    if engine == "trl":
        from massshift.lm.loading import ModelLoadError
        from massshift.train.trl_engine import train_grpo_trl

        try:
            result = train_grpo_trl(model, train, out, cfg, prompt=_prompt(chat, instruction), reward_fn=reward,
                                    progress=not no_progress, eval_facts=held, resume=resume)
        except (ValueError, ModelLoadError) as err:
            _fail(str(err))
    elif engine == "builtin":
        from massshift.train.grpo import train_grpo

        m, tok = _load(model, threads)
        result = train_grpo(m, tok, train, out, cfg, eval_facts=held, prompt=_prompt(chat, instruction),
                            reward_fn=reward, progress=not no_progress, resume=resume)
    _report_judge(grader, out)
    _report(result)
    if ckpt:
        _write_ckpts(model, result, out, held, "rl")


@train_app.command("sft")
def train_sft_cmd(
    model: ModelArg, facts: FactsOpt, out: OutOpt, eval_facts: EvalOpt = None, config: ConfigYaml = None,
    set_: SetOpt = None, epochs: Annotated[float | None, typer.Option(help="Passes over the examples.")] = None,
    steps: Steps = None, batch_size: StepBatch = None, lr: Lr = None, lora_r: LoraR = None,
    save_every: SaveEvery = None, eval_every: EvalEvery = None, seed: SeedGiven = None, threads: Threads = None,
    chat: Chat = False, instruction: Instruction = "", resume: Resume = False, no_progress: NoProgress = False,
    ckpt: WriteCkpt = True,
) -> None:
    """Supervised fine-tuning on the gold answers (the paper's SFT baseline)."""
    from massshift.train.sft import SFTConfig, train_sft

    named = {"epochs": epochs, "steps": steps, "batch_size": batch_size, "lr": lr, "lora_r": lora_r,
             "save_every": save_every, "eval_every": eval_every, "seed": seed, "threads": threads}
    cfg = _settings(SFTConfig, config, named, set_)
    m, tok = _load(model, threads)
    held = _load_facts_or_fail(eval_facts) if eval_facts else None
    result = train_sft(m, tok, _load_facts_or_fail(facts), out, cfg, eval_facts=held,
                       prompt=_prompt(chat, instruction), progress=not no_progress, resume=resume)
    _report(result)
    if ckpt:
        _write_ckpts(model, result, out, held, "sft")


@train_app.command("rft")
def train_rft_cmd(
    model: ModelArg, facts: FactsOpt, out: OutOpt, eval_facts: EvalOpt = None, config: ConfigYaml = None,
    set_: SetOpt = None, n_samples: Annotated[int | None, typer.Option("--samples", "-n", help="Samples per question.")] = None,
    epochs: Annotated[float | None, typer.Option(help="Passes over the kept samples.")] = None,
    steps: Steps = None, batch_size: StepBatch = None, lr: Lr = None, lora_r: LoraR = None, seed: SeedGiven = None,
    threads: Threads = None, chat: Chat = False, instruction: Instruction = "", resume: Resume = False,
    no_progress: NoProgress = False, ckpt: WriteCkpt = True, judge: Judge = None,
) -> None:
    """Rejection-sampling fine-tuning: SFT on the model's own correct samples (the paper's RFT baseline); with
    --judge the judge decides which samples are correct."""
    from massshift.train.rft import RFTConfig, train_rft

    named = {"n_samples": n_samples, "epochs": epochs, "steps": steps, "batch_size": batch_size, "lr": lr,
             "lora_r": lora_r, "seed": seed, "threads": threads}
    cfg = _settings(RFTConfig, config, named, set_)
    _train_on_samples(train_rft, "rft", cfg, model, facts, eval_facts, out, threads, chat, instruction, judge,
                      no_progress, resume, ckpt)


@train_app.command("dpo")
def train_dpo_cmd(
    model: ModelArg, facts: FactsOpt, out: OutOpt, eval_facts: EvalOpt = None, config: ConfigYaml = None,
    set_: SetOpt = None, n_samples: Annotated[int | None, typer.Option("--samples", "-n", help="Samples per question.")] = None,
    beta: Annotated[float | None, typer.Option(help="DPO's beta (default 0.1).")] = None,
    pairs_per_question: Annotated[int | None, typer.Option(help="Most pairs per question (default 1).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Passes over the pairs (default 3).")] = None,
    steps: Steps = None, batch_size: StepBatch = None, lr: Lr = None, lora_r: LoraR = None, match: MatchOpt = None,
    seed: SeedGiven = None, threads: Threads = None, chat: Chat = False, instruction: Instruction = "",
    resume: Resume = False, no_progress: NoProgress = False, ckpt: WriteCkpt = True, judge: Judge = None,
) -> None:
    """DPO on the model's own samples, a correct against an incorrect answer of the same question (the paper's
    DPO baseline; massshift.train.dpo); with --judge the judge decides which samples are correct."""
    from massshift.train.dpo import DPOConfig, train_dpo

    named = {"n_samples": n_samples, "beta": beta, "pairs_per_question": pairs_per_question, "epochs": epochs,
             "steps": steps, "batch_size": batch_size, "lr": lr, "lora_r": lora_r, "match_mode": match, "seed": seed,
             "threads": threads}
    cfg = _settings(DPOConfig, config, named, set_)
    _train_on_samples(train_dpo, "dpo", cfg, model, facts, eval_facts, out, threads, chat, instruction, judge,
                      no_progress, resume, ckpt)


def baselines(
    model: ModelArg, facts: Annotated[Path, typer.Option("--facts", "-f", help="Test facts.")],
    train: Annotated[Path | None, typer.Option("--train", help="Train facts (the k-shot pool; never the test facts).")] = None,
    out: OutOpt = Path("baselines"), config: ConfigYaml = None, set_: SetOpt = None,
    n_samples: Annotated[int | None, typer.Option("--samples", "-n", help="Samples for majority vote.")] = None,
    shots: Annotated[int | None, typer.Option(help="k for k-shot prompting.")] = None,
    seed: SeedGiven = None, threads: Threads = None, chat: Chat = False, instruction: Instruction = "",
) -> None:
    """Inference-time baselines: greedy, majority vote over n samples, k-shot prompting."""
    from massshift.rundir import init_run_dir, write_csv, write_parquet
    from massshift.studies.baselines import BaselineConfig, baseline_accuracy, run_baselines

    cfg = _settings(BaselineConfig, config, {"n_samples": n_samples, "shots": shots, "seed": seed}, set_)
    if train is None and "kshot" in cfg.methods:
        _fail("k-shot needs --train (the shots come from the train facts, never from the test facts)")
    m, tok = _load(model, threads)
    m.eval()
    init_run_dir(out, {"command": "baselines", "model": model, "facts": str(facts), "train": str(train),
                       "baselines": cfg.to_dict()}, seed=seed)
    results = run_baselines(m, tok, _load_facts_or_fail(facts), _load_facts_or_fail(train) if train else None, cfg,
                            _prompt(chat, instruction))
    table = baseline_accuracy(results, cfg)
    write_parquet(out / "predictions.parquet", results)
    write_csv(out / "accuracy.csv", table)
    for row in table.itertuples():
        typer.echo(f"{row.method:>12}: {_pct(row.accuracy)} [{_pct(row.ci_low)}, {_pct(row.ci_high)}] (n={row.n})")
