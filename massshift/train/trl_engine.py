"""The same GRPO run on TRL's GRPOTrainer, for scale (accelerate / DeepSpeed / vLLM) and as an anchor.

massshift supplies the data, the prompts and the reward; TRL does the rest.
The dataset has a ``prompt`` column built with ``prompts.build_prompt`` and an
``answers`` column that TRL passes to the reward function, which cuts each
completion at the terminator (``matching.extract_answer``) and scores it with
``matching.is_correct`` (or the user's ``reward_fn``). Generation stops at the
terminator because every token that contains it (plus EOS) is set as an
end-of-sequence id on the model's generation config during training; the
saved model gets its original generation config back.

Settings mapped from ``massshift.train.grpo.GRPOConfig``: num_generations,
temperature (top_k 0, top_p 1), max_new_tokens -> max_completion_length,
beta, epsilon, num_iterations, scale_rewards, lr (constant schedule, no
warmup), weight_decay, max_grad_norm, seed, LoRA rank/alpha (all linear
layers, dropout 0), dropout off. ``batch_size`` questions x G completions form
one optimizer batch (per_device_train_batch_size = batch_size * G, no gradient
accumulation), and the loss is TRL's ``dapo`` aggregation: the token sum over
the batch divided by its token count, as in massshift.

Differences that remain (TRL 1.16):

- ``steps`` are rollouts in massshift; TRL counts optimizer steps, so
  ``max_steps = steps * num_iterations``.
- Data order: TRL's ``RepeatSampler`` shuffles prompts with its own seed, so
  the two engines see the same questions in different orders, and the
  samples differ (TRL samples with ``model.generate``).
- TRL computes old log-probs only when it needs them and logs its own
  diagnostics; ``train_log.jsonl`` maps its names onto massshift's where a
  counterpart exists (reward_mean, reward_std, zero_var_share, entropy,
  completion_len, clipped_share, kl, loss, grad_norm) and keeps the rest.
- With ``PromptConfig(chat=True)`` TRL re-tokenises the rendered chat text
  with special tokens, which can double a BOS (massshift never does).
- Held-out greedy accuracy (``eval_facts``) is measured before training and
  after the last step only; ``eval_every`` is not used by this engine.
- ``resume`` continues from TRL's last checkpoint under ``OUT/trl``
  (``resume_from_checkpoint``), which TRL writes every ``save_every`` steps.

The model is loaded with ``massshift.lm.loading.load_model``, so every spec
the built-in trainer accepts (folder, hub id, PEFT adapter, ``.gguf``, state
dict, named model) works here, and the reward is ``grpo.build_reward``: both
engines optimise the same function, anti-hedging under ``contains`` included.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from massshift.data.matching import extract_answer
from massshift.lm.loading import load_model
from massshift.lm.prompts import PromptConfig, build_prompt, stop_texts
from massshift.lm.runtime import default_device, torch_threads
from massshift.lm.sampling import stop_token_mask
from massshift.rundir import init_run_dir, write_json
from massshift.train.common import (
    TrainLog,
    TrainResult,
    check_facts,
    greedy_accuracy,
    log_summary,
    save_training_figure,
)
from massshift.train.grpo import GRPOConfig, RewardFn, build_reward

logger = logging.getLogger(__name__)

_LOG_NAMES = {
    "reward": "reward_mean", "reward_std": "reward_std", "frac_reward_zero_std": "zero_var_share",
    "entropy": "entropy", "completions/mean_length": "completion_len", "clip_ratio/region_mean": "clipped_share",
    "kl": "kl", "loss": "loss", "grad_norm": "grad_norm", "step_time": "seconds",
}


def massshift_reward(terminator: str, matcher: Any = None, reward_fn: RewardFn | None = None) -> Any:
    """A TRL reward function: ``(completions, answers, **kwargs) -> list[float]``."""

    def correctness(completions: Sequence[Any], answers: Sequence[Sequence[str]], **kwargs: Any) -> list[float]:
        out = []
        for comp, golds in zip(completions, answers):
            text = comp if isinstance(comp, str) else comp[-1]["content"]  # conversational completions
            pred = extract_answer(text, terminator)
            out.append(float(reward_fn(pred, list(golds))) if reward_fn else float(matcher(pred, list(golds))))
        return out

    correctness.__name__ = "massshift_correctness"
    return correctness


def trl_arguments(config: GRPOConfig, out: Path, use_cpu: bool) -> dict[str, Any]:
    """Keyword arguments of ``trl.GRPOConfig`` matching a massshift ``GRPOConfig``."""
    return {
        "output_dir": str(out / "trl"), "max_steps": config.steps * config.num_iterations,
        "per_device_train_batch_size": config.batch_size * config.num_generations,
        "gradient_accumulation_steps": 1, "num_generations": config.num_generations,
        "max_completion_length": config.max_new_tokens, "temperature": config.temperature, "top_p": 1.0,
        "top_k": 0, "beta": config.beta, "epsilon": config.epsilon, "num_iterations": config.num_iterations,
        "scale_rewards": config.scale_rewards, "loss_type": "dapo", "learning_rate": config.lr,
        "lr_scheduler_type": "constant", "warmup_steps": 0, "weight_decay": config.weight_decay,
        "max_grad_norm": config.max_grad_norm, "adam_beta1": 0.9, "adam_beta2": 0.999, "adam_epsilon": 1e-8,
        "optim": "adamw_torch", "seed": config.seed, "data_seed": config.seed, "use_cpu": use_cpu,
        "bf16": False, "fp16": False, "report_to": "none", "logging_steps": 1,
        "save_strategy": "steps" if config.save_every else "no", "save_steps": max(config.save_every, 1),
        "disable_dropout": True, "log_completions": False, "dataloader_num_workers": 0,
    }


def train_grpo_trl(model_path: str | Path, train_facts: pd.DataFrame, out_dir: str | Path,
                   config: GRPOConfig | None = None, prompt: PromptConfig | None = None,
                   reward_fn: RewardFn | None = None, callbacks: list[Any] | None = None,
                   use_cpu: bool | None = None, progress: bool = False, eval_facts: pd.DataFrame | None = None,
                   resume: bool = False) -> TrainResult:
    """Run GRPO with TRL's GRPOTrainer on massshift's data, prompts and reward; final model in OUT/final.

    ``model_path`` is any spec ``load_model`` accepts. ``callbacks`` are passed to the trainer
    (transformers ``TrainerCallback``s); ``use_cpu`` defaults to True when no GPU is visible. Without
    ``progress`` the trainer's progress bar and log printing are removed (massshift library code does
    not print). ``eval_facts``: greedy accuracy before training and after the last step, logged as
    ``eval_accuracy``. ``resume``: continue from the last checkpoint TRL wrote under ``OUT/trl``.
    """
    try:
        from trl import GRPOConfig as TRLConfig
        from trl import GRPOTrainer
    except ImportError as err:
        raise ImportError("the TRL engine needs trl: pip install 'massshift[trl]' "
                          "(or use the built-in trainer, massshift.train.grpo)") from err

    config = config or GRPOConfig()
    if config.truncated_reward != "text":
        raise ValueError("the TRL engine has no truncated_reward='zero' (TRL's mask_truncated_completions drops "
                         "truncated completions from the loss instead, another objective); use the built-in "
                         "engine, or truncated_reward='text'")
    prompt = prompt or PromptConfig()
    train = check_facts(train_facts, "train_facts")
    evals = check_facts(eval_facts, "eval_facts") if eval_facts is not None else None
    use_cpu = default_device() == "cpu" if use_cpu is None else use_cpu
    out = Path(out_dir)
    args = trl_arguments(config, out, use_cpu)
    checkpoint = _last_trl_checkpoint(out) if resume else None
    init_run_dir(out, {"trainer": "grpo", "engine": "trl", "grpo": config.to_dict(), "prompt": prompt.to_dict(),
                       "trl": args, "custom_reward": reward_fn is not None}, seed=config.seed)
    if prompt.chat:
        logger.warning("TRL re-tokenises the rendered chat prompt with special tokens (a BOS may be doubled)")
    matcher = config.match_config(prompt.terminator).matcher()
    reward = massshift_reward(prompt.terminator, reward_fn=build_reward(train, config, prompt.terminator, reward_fn))
    with torch_threads(config.threads):
        model, tokenizer, _ = load_model(str(model_path))
        first_eval = None
        if evals is not None and checkpoint is None:
            first_eval = greedy_accuracy(model, tokenizer, evals, prompt, matcher, config.max_new_tokens)
        original_eos = model.generation_config.eos_token_id
        trainer = _trainer(GRPOTrainer, TRLConfig(**args), model, tokenizer, _dataset(train, prompt, tokenizer),
                           stop_texts(prompt, tokenizer), reward, _lora(config), callbacks, progress)
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint is not None else None)
        trained = trainer.model
        if hasattr(trained, "peft_config"):
            trained.save_pretrained(out / "final" / "adapter")
            trained = trained.merge_and_unload()
        trained.generation_config.eos_token_id = original_eos
        last_eval = greedy_accuracy(trained, tokenizer, evals, prompt, matcher, config.max_new_tokens) \
            if evals is not None else None
        trained.save_pretrained(out / "final")
        tokenizer.save_pretrained(out / "final")
    frame = _write_log(out, trainer.state.log_history, first_eval, last_eval, resumed=checkpoint is not None)
    save_training_figure(frame, out)
    write_json(out / "summary.json", {
        "trainer": "grpo", "engine": "trl", "steps": config.steps, "optimizer_steps": args["max_steps"],
        "resumed_from": _checkpoint_step(checkpoint) // config.num_iterations if checkpoint is not None else None,
        **log_summary(frame), "final": str(out / "final"), "lora": config.lora_r > 0,
    })
    return TrainResult(log=frame, final_path=out / "final", out_dir=out, model=trained)


def _trainer(trainer_cls: Any, args: Any, model: Any, tokenizer: Any, data: Any, stops: Sequence[str], reward: Any,
             peft_config: Any, callbacks: list[Any] | None, progress: bool) -> Any:
    """The GRPOTrainer, with every token containing a stop (``prompts.stop_texts``: the terminator, a chat
    template's end-of-turn marker) or EOS as a stop id for sampling."""
    model.generation_config.eos_token_id = stop_token_mask(tokenizer, stops[0], stops=stops[1:]).nonzero()[:, 0].tolist()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    trainer = trainer_cls(model=model, reward_funcs=reward, args=args, train_dataset=data, processing_class=tokenizer,
                          peft_config=peft_config, callbacks=callbacks)
    if not progress:
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        trainer.remove_callback(ProgressCallback)
        trainer.remove_callback(PrinterCallback)
    return trainer


def _dataset(train: pd.DataFrame, prompt: PromptConfig, tokenizer: Any) -> Any:
    """The TRL dataset: a ``prompt`` column (``prompts.build_prompt``), ``answers`` and ``fact_id``."""
    from datasets import Dataset

    return Dataset.from_dict({
        "prompt": [build_prompt(q, prompt, tokenizer) for q in train["question"]],
        "answers": [list(a) for a in train["answers"]], "fact_id": list(train["fact_id"]),
    })


def _lora(config: GRPOConfig) -> Any:
    """The PEFT LoRA config of ``config`` (all linear layers, dropout 0), or None for full fine-tuning."""
    if config.lora_r == 0:
        return None
    from peft import LoraConfig

    return LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=0.0,
                      target_modules="all-linear", task_type="CAUSAL_LM")


def _checkpoint_step(path: Path) -> int:
    return int(path.name.removeprefix("checkpoint-"))


def _last_trl_checkpoint(out: Path) -> Path | None:
    """TRL's checkpoint with the highest step under ``OUT/trl`` (None, and a fresh start, when there is none)."""
    found = [p for p in (out / "trl").glob("checkpoint-*") if p.name.removeprefix("checkpoint-").isdigit()]
    if not found:
        logger.info("resume: no TRL checkpoint under %s; starting fresh", out / "trl")
        return None
    return max(found, key=_checkpoint_step)


def _write_log(out: Path, history: Sequence[dict[str, Any]], first_eval: float | None,
               last_eval: float | None, resumed: bool = False) -> pd.DataFrame:
    """``OUT/train_log.jsonl`` from TRL's log history (massshift's names where a counterpart exists).

    A resumed run keeps the interrupted run's eval before training (its step-0 row)."""
    log = TrainLog(out)
    start = [r for r in log.rows() if r.get("step") == 0 and "eval_accuracy" in r] if resumed else []
    if log.path.exists():
        log.path.unlink()
    if first_eval is not None:
        start = [{"step": 0, "eval_accuracy": first_eval}]
    for row in start:
        log.append(row)
    rows = [{"step": e["step"], **{_LOG_NAMES.get(k, k): v for k, v in e.items() if k != "step"}}
            for e in history if "step" in e and ("loss" in e or "reward" in e)]
    if last_eval is not None:
        if rows:
            rows[-1]["eval_accuracy"] = last_eval
        else:
            rows.append({"step": 0, "eval_accuracy": last_eval})
    for row in rows:
        log.append(row)
    return log.frame()
