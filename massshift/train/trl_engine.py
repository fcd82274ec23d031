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
- No held-out evaluation during training and no resume in this wrapper.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from massshift.data.matching import extract_answer
from massshift.lm.prompts import PromptConfig, build_prompt
from massshift.lm.runtime import torch_threads
from massshift.lm.sampling import stop_token_mask
from massshift.rundir import init_run_dir, write_json
from massshift.train.common import TrainLog, TrainResult, check_facts, save_training_figure
from massshift.train.grpo import GRPOConfig, RewardFn

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
                   use_cpu: bool | None = None, progress: bool = False) -> TrainResult:
    """Run GRPO with TRL's GRPOTrainer on massshift's data, prompts and reward; final model in OUT/final.

    ``callbacks`` are passed to the trainer (transformers ``TrainerCallback``s); ``use_cpu`` defaults
    to True when no GPU is visible. Without ``progress`` the trainer's progress bar and log printing
    are removed (massshift library code does not print).
    """
    try:
        from trl import GRPOConfig as TRLConfig
        from trl import GRPOTrainer
    except ImportError as err:
        raise ImportError("the TRL engine needs trl: pip install 'massshift[trl]' "
                          "(or use the built-in trainer, massshift.train.grpo)") from err
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = config or GRPOConfig()
    prompt = prompt or PromptConfig()
    train = check_facts(train_facts, "train_facts")
    use_cpu = (not torch.cuda.is_available()) if use_cpu is None else use_cpu
    out = Path(out_dir)
    args = trl_arguments(config, out, use_cpu)
    init_run_dir(out, {"trainer": "grpo", "engine": "trl", "grpo": config.to_dict(), "prompt": prompt.to_dict(),
                       "trl": args, "custom_reward": reward_fn is not None}, seed=config.seed)
    if prompt.chat:
        logger.warning("TRL re-tokenises the rendered chat prompt with special tokens (a BOS may be doubled)")
    with torch_threads(config.threads):
        tokenizer = AutoTokenizer.from_pretrained(model_path)
        model = AutoModelForCausalLM.from_pretrained(model_path)
        original_eos = model.generation_config.eos_token_id
        stop_ids = stop_token_mask(tokenizer, prompt.terminator).nonzero()[:, 0].tolist()
        model.generation_config.eos_token_id = stop_ids
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        data = Dataset.from_dict({
            "prompt": [build_prompt(q, prompt, tokenizer) for q in train["question"]],
            "answers": [list(a) for a in train["answers"]], "fact_id": list(train["fact_id"]),
        })
        peft_config = None
        if config.lora_r > 0:
            from peft import LoraConfig

            peft_config = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=0.0,
                                     target_modules="all-linear", task_type="CAUSAL_LM")
        matcher = config.match_config(prompt.terminator).matcher()
        trainer = GRPOTrainer(model=model, reward_funcs=massshift_reward(prompt.terminator, matcher, reward_fn),
                              args=TRLConfig(**args), train_dataset=data, processing_class=tokenizer,
                              peft_config=peft_config, callbacks=callbacks)
        if not progress:
            from transformers.trainer_callback import PrinterCallback, ProgressCallback

            trainer.remove_callback(ProgressCallback)
            trainer.remove_callback(PrinterCallback)
        trainer.train()
        trained = trainer.model
        if hasattr(trained, "peft_config"):
            trained.save_pretrained(out / "final" / "adapter")
            trained = trained.merge_and_unload()
        trained.generation_config.eos_token_id = original_eos
        trained.save_pretrained(out / "final")
        tokenizer.save_pretrained(out / "final")
    log = TrainLog(out)
    if log.path.exists():
        log.path.unlink()
    for entry in trainer.state.log_history:
        if "step" in entry and ("loss" in entry or "reward" in entry):
            log.append({"step": entry["step"], **{_LOG_NAMES.get(k, k): v for k, v in entry.items() if k != "step"}})
    frame = log.frame()
    save_training_figure(frame, out)
    write_json(out / "summary.json", {
        "trainer": "grpo", "engine": "trl", "steps": config.steps, "optimizer_steps": args["max_steps"],
        "reward_first5": float(frame["reward_mean"].head(5).mean()) if "reward_mean" in frame else None,
        "reward_last5": float(frame["reward_mean"].tail(5).mean()) if "reward_mean" in frame else None,
        "final": str(out / "final"), "lora": config.lora_r > 0,
    })
    return TrainResult(log=frame, final_path=out / "final", out_dir=out, model=trained)
