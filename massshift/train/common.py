"""What the built-in trainers share: config I/O, data order, checkpoints, logs, evaluation, figures.

- **Config I/O.** Every trainer config is a frozen dataclass that mixes in
  ``ConfigIO``: ``to_dict``, ``from_dict`` (unknown keys are an error that
  lists the valid ones), ``from_yaml``, ``to_yaml``.
- **Data order** is a pure function of (seed, step): the facts are shuffled
  once per epoch with a generator seeded from (seed, epoch), and step ``s``
  takes the next ``batch_size`` facts of that stream. A resumed run therefore
  sees exactly the batches an uninterrupted run would, without storing a
  sampler state.
- **Checkpoints**: ``OUT/checkpoints/step-N`` is a Hugging Face folder (model
  or, with LoRA, the PEFT adapter; tokenizer; safetensors) plus
  ``trainer_state.pt`` (step, optimizer state, torch RNG states: tensors,
  dicts, lists and numbers only, loaded with ``weights_only=True``).
  ``OUT/final`` is a plain model folder; with LoRA the merged model, and the
  adapter in ``OUT/final/adapter``.
- **Logs**: ``OUT/train_log.jsonl``, one JSON object per step; a resumed run
  drops the lines written after its checkpoint.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from massshift.configio import ConfigIO  # noqa: F401  (re-exported for the trainers)
from massshift.data.matching import Matcher
from massshift.lm.logprobs import continuation_logprobs
from massshift.lm.prompts import PromptConfig, build_prompt, encode_prompt, stop_texts
from massshift.lm.sampling import GenerationConfig, generate
from massshift.progress import progress_bar
from massshift.rundir import write_text
from massshift.seeds import derive_seed

logger = logging.getLogger(__name__)

FACT_COLUMNS = ("fact_id", "question", "answers")
TRAINER_STATE = "trainer_state.pt"


def check_facts(facts: pd.DataFrame, what: str = "facts") -> pd.DataFrame:
    """The facts table with string fact ids; a clear error when a column is missing or empty."""
    missing = [c for c in FACT_COLUMNS if c not in facts.columns]
    if missing:
        raise ValueError(f"{what} lacks column(s) {missing}; a facts table needs {list(FACT_COLUMNS)} "
                         "(massshift.data.facts.load_facts makes one)")
    if len(facts) == 0:
        raise ValueError(f"{what} is empty")
    out = facts.reset_index(drop=True).copy()
    out["fact_id"] = out["fact_id"].astype(str)
    out["answers"] = [list(a) for a in out["answers"]]
    if any(len(a) == 0 for a in out["answers"]):
        raise ValueError(f"{what}: every fact needs at least one answer")
    return out


def batch_indices(n: int, batch_size: int, seed: int, step: int) -> list[int]:
    """Row indices of step ``step``'s batch: the next ``batch_size`` items of a per-epoch shuffled stream."""
    out: list[int] = []
    pos = step * batch_size
    while len(out) < batch_size:
        epoch, offset = divmod(pos, n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed(seed, "epoch", epoch)))
        take = min(batch_size - len(out), n - offset)
        out.extend(perm[offset: offset + take].tolist())
        pos += take
    return out


def prompt_ids_for(tokenizer: Any, questions: Sequence[str], prompt: PromptConfig) -> list[list[int]]:
    """Token ids of each question's prompt (prompts.build_prompt + encode_prompt)."""
    return [encode_prompt(tokenizer, build_prompt(q, prompt, tokenizer), prompt) for q in questions]


def completion_logprobs(model: torch.nn.Module, prompt_ids: Sequence[Sequence[int]],
                        completion_ids: Sequence[Sequence[int]], pad_id: int, temperature: float = 1.0,
                        with_entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Teacher-forced log-probs of each completion token given its prompt, with gradients.

    ``prompt_ids`` has one prompt per completion row; identical prompts (a GRPO group) run once.
    The kernel is ``massshift.lm.logprobs.continuation_logprobs``, the one scoring uses. Returns
    log-probs (rows, C), the completion mask (rows, C) and, with ``with_entropy``, the entropy of
    each position's distribution (rows, C; no grad).
    """
    index: dict[tuple[int, ...], int] = {}
    rows = [index.setdefault(tuple(p), len(index)) for p in prompt_ids]
    out = continuation_logprobs(model, [list(p) for p in index], completion_ids, pad_id, rows,
                                temperature=temperature, with_entropy=with_entropy)
    return out.logp, out.mask, out.entropy


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters (betas 0.9/0.999, eps 1e-8, as TRL's default)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.999), eps=1e-8)


def is_peft(model: torch.nn.Module) -> bool:
    """Whether ``model`` is a PEFT model (has adapters)."""
    return hasattr(model, "peft_config")


def apply_lora(model: torch.nn.Module, r: int, alpha: float) -> torch.nn.Module:
    """Wrap ``model`` with LoRA adapters on all linear layers (PEFT; dropout 0)."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("lora_r > 0 needs PEFT: pip install 'massshift[peft]'") from err
    cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    return get_peft_model(model, cfg)


def save_checkpoint(model: Any, tokenizer: Any, optimizer: torch.optim.Optimizer, step: int,
                    out_dir: str | os.PathLike[str]) -> Path:
    """Write ``OUT/checkpoints/step-N`` (model or adapter, tokenizer, trainer_state.pt)."""
    path = Path(out_dir) / "checkpoints" / f"step-{step}"
    tmp = path.with_name(f".{path.name}.tmp")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    rng: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    torch.save({"step": step, "optimizer": optimizer.state_dict(), "rng": rng}, tmp / TRAINER_STATE)
    if path.exists():
        import shutil

        shutil.rmtree(path)
    os.replace(tmp, path)
    logger.info("checkpoint written: %s", path)
    return path


def last_checkpoint(out_dir: str | os.PathLike[str]) -> Path | None:
    """The checkpoint with the highest step under ``OUT/checkpoints`` (None when there is none)."""
    root = Path(out_dir) / "checkpoints"
    found = [(int(m.group(1)), p) for p in root.glob("step-*")
             if (m := re.fullmatch(r"step-(\d+)", p.name)) and (p / TRAINER_STATE).exists()]
    return max(found)[1] if found else None


def load_checkpoint(model: Any, optimizer: torch.optim.Optimizer, path: str | os.PathLike[str]) -> int:
    """Load weights (or adapter), optimizer and RNG states from ``path``; returns its step."""
    path = Path(path)
    state = torch.load(path / TRAINER_STATE, weights_only=True)
    if is_peft(model):
        from peft import load_peft_weights, set_peft_model_state_dict

        set_peft_model_state_dict(model, load_peft_weights(str(path), device="cpu"))
    else:
        dtype = next(model.parameters()).dtype
        saved = type(model).from_pretrained(path, dtype=dtype)
        model.load_state_dict(saved.state_dict())
        del saved
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng"]["torch"])
    if "cuda" in state["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    logger.info("resumed from %s", path)
    return int(state["step"])


def save_final(model: Any, tokenizer: Any, out_dir: str | os.PathLike[str]) -> tuple[Path, Any]:
    """Write ``OUT/final`` as a plain model folder; with LoRA also the adapter, then merge.

    Returns the folder and the model to keep using (the merged model with LoRA).
    """
    final = Path(out_dir) / "final"
    final.mkdir(parents=True, exist_ok=True)
    if is_peft(model):
        model.save_pretrained(final / "adapter")
        model = model.merge_and_unload()
    model.save_pretrained(final)
    tokenizer.save_pretrained(final)
    return final, model


class TrainLog:
    """``OUT/train_log.jsonl``: one JSON line per step, appended as training goes."""

    def __init__(self, out_dir: str | os.PathLike[str]) -> None:
        self.path = Path(out_dir) / "train_log.jsonl"

    def append(self, row: Mapping[str, Any]) -> None:
        """Append one row (NaN and infinities become null)."""
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(clean) + "\n")

    def rows(self) -> list[dict[str, Any]]:
        """Every row written so far."""
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]

    def truncate(self, step: int) -> None:
        """Keep only rows with ``step <= step`` (a resumed run rewrites what came after its checkpoint)."""
        kept = [r for r in self.rows() if r.get("step", 0) <= step]
        write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))

    def frame(self) -> pd.DataFrame:
        """The log as a DataFrame."""
        return pd.DataFrame(self.rows())


def greedy_accuracy(model: torch.nn.Module, tokenizer: Any, facts: pd.DataFrame, prompt: PromptConfig,
                    matcher: Matcher, max_new_tokens: int) -> float:
    """Share of ``facts`` whose greedy answer is correct (greedy-only generation)."""
    ids = prompt_ids_for(tokenizer, list(facts["question"]), prompt)
    gens = generate(model, ids, list(facts["fact_id"]), tokenizer,
                    GenerationConfig(n_samples=0, max_new_tokens=max_new_tokens), prompt.terminator,
                    stops=stop_texts(prompt, tokenizer))
    hits = [matcher(g.greedy, list(a)) for g, a in zip(gens, facts["answers"])]
    return float(sum(hits) / len(hits))


def plot_training_log(log_df: pd.DataFrame, reward_column: str = "reward_mean") -> Any:
    """Training curve: ``reward_column`` per step (and its 5-step moving average) beside eval accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.0, 3.0), layout="constrained")
    ax_r, ax_e = fig.subplots(1, 2)
    if reward_column in log_df and log_df[reward_column].notna().any():
        d = log_df.dropna(subset=[reward_column])
        ax_r.plot(d["step"], d[reward_column], lw=0.8, alpha=0.5, label="per step")
        ax_r.plot(d["step"], d[reward_column].rolling(5, min_periods=1).mean(), lw=1.6, label="5-step mean")
        ax_r.legend(frameon=False, fontsize=8)
    ax_r.set(xlabel="step", ylabel=reward_column.replace("_", " "), title=f"training {reward_column.split('_')[0]}")
    if "eval_accuracy" in log_df and log_df["eval_accuracy"].notna().any():
        d = log_df.dropna(subset=["eval_accuracy"])
        ax_e.plot(d["step"], d["eval_accuracy"], marker="o", lw=1.2)
    else:
        ax_e.text(0.5, 0.5, "no evaluation", ha="center", va="center", transform=ax_e.transAxes)
    ax_e.set(xlabel="step", ylabel="greedy accuracy", title="held-out greedy accuracy")
    return fig


def save_training_figure(log_df: pd.DataFrame, out_dir: str | os.PathLike[str],
                         reward_column: str = "reward_mean") -> Path:
    """Draw ``plot_training_log`` into ``OUT/figures/training.png``."""
    path = Path(out_dir) / "figures" / "training.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    plot_training_log(log_df, reward_column).savefig(path, dpi=150)
    return path


def loss_run_summary(out: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A loss-trained run's log (its figure drawn into ``OUT/figures``) and the summary fields SFT, RFT and DPO
    share: the first and last loss, the first and last eval accuracy."""
    frame = TrainLog(out).frame()
    save_training_figure(frame, out, reward_column="loss")
    losses = frame["loss"].dropna() if "loss" in frame else pd.Series(dtype=float)
    evals = frame["eval_accuracy"].dropna() if "eval_accuracy" in frame else pd.Series(dtype=float)
    first_last = lambda x, i: float(x.iloc[i]) if len(x) else None  # noqa: E731
    return frame, {"loss_first": first_last(losses, 0), "loss_last": first_last(losses, -1),
                   "eval_accuracy_start": first_last(evals, 0), "eval_accuracy_end": first_last(evals, -1)}


@dataclass
class TrainResult:
    """What a trainer returns: the log, the final model folder, the run directory and the trained model."""

    log: pd.DataFrame
    final_path: Path
    out_dir: Path
    model: Any


@dataclass
class LoopResult:
    """Bookkeeping of ``training_loop``: where it started, how long it ran, the first eval accuracy."""

    start: int
    seconds: float
    first_eval: float | None


def training_loop(*, model: Any, tokenizer: Any, optimizer: torch.optim.Optimizer, out: Path, steps: int,
                  step_fn: Callable[[int], dict[str, Any]], eval_fn: Callable[[], float] | None,
                  save_every: int, eval_every: int, resume: bool, progress: bool, label: str,
                  show: str = "loss") -> LoopResult:
    """Run ``step_fn(0..steps-1)`` with resume, logging, periodic eval and checkpoints.

    ``step_fn(s)`` trains step ``s`` and returns its log row (with ``step = s + 1``). ``eval_fn``
    (greedy accuracy on held-out facts) runs before training on a fresh start, every
    ``eval_every`` steps and after the last step; its value is logged as ``eval_accuracy``.
    ``show`` names the row field the progress bar displays.
    """
    log = TrainLog(out)
    start = 0
    ckpt = last_checkpoint(out) if resume else None
    if ckpt is not None:
        start = load_checkpoint(model, optimizer, ckpt)
        log.truncate(start)
    elif log.path.exists():
        log.path.unlink()
    first = None
    if eval_fn is not None and start == 0:
        first = eval_fn()
        log.append({"step": 0, "eval_accuracy": first})
    t0 = time.perf_counter()
    with progress_bar(steps, label, unit="steps", enabled=progress, completed=start) as advance:
        for s in range(start, steps):
            row = step_fn(s)
            done = s + 1
            if eval_fn is not None and ((eval_every and done % eval_every == 0) or done == steps):
                row["eval_accuracy"] = eval_fn()
            log.append(row)
            logger.debug("%s step %d: %s", label, done, row)
            if save_every and done % save_every == 0:
                save_checkpoint(model, tokenizer, optimizer, done, out)
            extra = f" eval {row['eval_accuracy']:.3f}" if "eval_accuracy" in row else ""
            advance(1, status=f"{show} {row.get(show, float('nan')):.3f}{extra}")
    return LoopResult(start=start if ckpt is not None else 0, seconds=time.perf_counter() - t0, first_eval=first)


def truncation_warning(frame: pd.DataFrame, config: Any, threshold: float = 0.5) -> str | None:
    """A warning when most completions of the last five steps hit ``max_new_tokens`` without a stop and were
    still rewarded on their text: the reward may be paid for answers that never end (an answer repeated
    until the cap), which a longer generation at test time judges wrong. None otherwise."""
    if config.truncated_reward != "text" or "truncated_share" not in frame:
        return None
    last = frame["truncated_share"].dropna().tail(5)
    if not len(last) or float(last.mean()) <= threshold:
        return None
    return (f"{float(last.mean()):.0%} of the completions of the last {len(last)} steps hit max_new_tokens="
            f"{config.max_new_tokens} without a stop and were rewarded on their text; the model may have learned "
            f"answers that never end (scored wrong when generation runs longer). Try truncated_reward='zero' "
            f"or a larger max_new_tokens.")


def log_summary(frame: pd.DataFrame) -> dict[str, float | None]:
    """Reward over the first and last five steps and the first and last eval accuracy of a GRPO log."""
    trained = frame.dropna(subset=["reward_mean"]) if "reward_mean" in frame else frame.iloc[:0]
    evals = frame["eval_accuracy"].dropna() if "eval_accuracy" in frame else pd.Series(dtype=float)
    return {
        "reward_first5": float(trained["reward_mean"].head(5).mean()) if len(trained) else None,
        "reward_last5": float(trained["reward_mean"].tail(5).mean()) if len(trained) else None,
        "eval_accuracy_start": float(evals.iloc[0]) if len(evals) else None,
        "eval_accuracy_end": float(evals.iloc[-1]) if len(evals) else None,
    }
