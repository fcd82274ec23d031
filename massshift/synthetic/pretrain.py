"""Pretrain a tiny causal language model from scratch on a synthetic world's corpus.

A plain PyTorch loop, nanoGPT-style: documents (each followed by ``<eos>``)
are shuffled once per epoch with a seeded ``torch.Generator``, concatenated and
cut into fixed-length blocks; AdamW with linear warmup and cosine decay to
``min_lr_ratio * lr``, gradient-norm clipping, no dropout. The model is a
Hugging Face ``LlamaForCausalLM`` (or ``GPT2LMHeadModel``) built from a config,
so the result is an ordinary model folder (``save_pretrained``, safetensors)
that every other massshift stage loads like any checkpoint.

The output folder is both the model folder and a run directory: ``config.json``
and ``model.safetensors`` (the model), the tokenizer files, ``config.yaml`` and
``env.json`` (``massshift.rundir``), ``pretrain_log.jsonl`` (one line per step:
loss, learning rate, gradient norm, tokens seen, seconds) and ``summary.json``.

CPU threads: ``threads=None`` means ``lm.runtime.auto_threads()``, the cores not already busy (threads
that share a busy core spin and wait for each other; docs/speed.md has the numbers). Runs are reproducible
bit for bit for a given thread count. How the defaults (batch 16, lr 5e-3, 40 epochs) were chosen is in
docs/demo.md.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from massshift.configio import ConfigIO, help_field
from massshift.lm.loading import auto_threads
from massshift.progress import progress_bar
from massshift.rundir import init_run_dir, write_json, write_text
from massshift.synthetic.tokenizer import save_tokenizer
from massshift.synthetic.world import load_world_tokenizer, split_documents

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PretrainConfig(ConfigIO):
    """Settings of a pretraining run (every field is written to the run's config.yaml).

    The defaults give a Llama of about 1.2M parameters on the default world's
    vocabulary of ~2.2k words (0.65M in the four blocks, the rest in the input
    and output embeddings).
    """

    seed: int = help_field(0, help="Seeds the weight initialisation and the data order.")
    architecture: Literal["llama", "gpt2"] = help_field("llama", help="llama (RMSNorm, rotary, SwiGLU) or gpt2.")
    d_model: int = help_field(128, help="Hidden size.")
    n_layers: int = help_field(4, help="Transformer blocks.")
    n_heads: int = help_field(4, help="Attention heads; must divide d_model.")
    d_ff: int = help_field(256, help="Feed-forward (intermediate) size.")
    tie_embeddings: bool = help_field(False, help="Share input and output embeddings (always on for gpt2).")
    context_length: int = help_field(128, help="Tokens per training block, and the model's maximum length.")
    batch_size: int = help_field(16, help="Blocks per optimizer step.")
    lr: float = help_field(5e-3, help="Peak learning rate.")
    min_lr_ratio: float = help_field(0.1, help="The cosine schedule ends at lr * min_lr_ratio.")
    warmup_steps: int = help_field(50, help="Linear warmup steps (capped at the run's length).")
    weight_decay: float = help_field(0.1, help="AdamW weight decay (not applied to norms and biases).")
    grad_clip: float = help_field(1.0, help="Clip the global gradient norm to this value (0: no clipping).")
    epochs: float = help_field(40.0, help="Passes over the corpus, used when max_steps is None.")
    max_steps: int | None = help_field(None, help="Optimizer steps; overrides epochs.")
    threads: int | None = help_field(None, help="Torch CPU threads during the run (None: the cores not already busy).")
    log_every: int = help_field(50, help="Log a line every this many steps.")

    def __post_init__(self) -> None:
        if self.architecture not in ("llama", "gpt2"):
            raise ValueError(f"architecture must be 'llama' or 'gpt2', got {self.architecture!r}")
        for name in ("d_model", "n_layers", "n_heads", "d_ff", "context_length", "batch_size", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.d_model % self.n_heads:
            raise ValueError(f"n_heads ({self.n_heads}) must divide d_model ({self.d_model})")
        if self.context_length < 2:
            raise ValueError(f"context_length must be >= 2, got {self.context_length}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0 (1e-3 to 1e-2 suits ~1M-parameter models), got {self.lr}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.warmup_steps < 0 or self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError("warmup_steps, weight_decay and grad_clip must be >= 0")
        if self.max_steps is None and not self.epochs > 0:
            raise ValueError(f"epochs must be > 0 when max_steps is None, got {self.epochs}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1 or None (then epochs decides), got {self.max_steps}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1 or None (the cores not already busy), got {self.threads}")



@dataclass
class PretrainResult:
    """What a pretraining run did.

    Attributes:
        out_dir: the model folder / run directory.
        losses: training loss of every step (mean cross-entropy per token, nats).
        steps: optimizer steps taken.
        tokens_per_s: training tokens per second of the loop (setup excluded).
        wall_s: seconds of the whole call, tokenisation and saving included.
        n_params: model parameters.
        n_corpus_tokens: tokens in the corpus, ``<eos>`` separators included.
        model: the trained model, in eval mode (not written anywhere; the folder holds it).
    """

    out_dir: Path
    losses: list[float] = field(default_factory=list)
    steps: int = 0
    tokens_per_s: float = 0.0
    wall_s: float = 0.0
    n_params: int = 0
    n_corpus_tokens: int = 0
    model: PreTrainedModel | None = field(default=None, repr=False)

    @property
    def final_loss(self) -> float:
        """Mean loss of the last ten steps (fewer if the run was shorter)."""
        tail = self.losses[-10:]
        return sum(tail) / len(tail) if tail else float("nan")


def build_model(config: PretrainConfig, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    """A freshly initialised model of ``config`` sized to ``tokenizer``; weights seeded by ``config.seed``.

    The global torch RNG is forked, so building a model leaves it untouched.
    """
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    if config.architecture == "llama":
        hf_config = LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=config.d_model, intermediate_size=config.d_ff,
            num_hidden_layers=config.n_layers, num_attention_heads=config.n_heads,
            num_key_value_heads=config.n_heads, max_position_embeddings=config.context_length,
            tie_word_embeddings=config.tie_embeddings, bos_token_id=None, eos_token_id=eos, pad_token_id=pad,
        )
        model_cls: type[PreTrainedModel] = LlamaForCausalLM
    else:
        hf_config = GPT2Config(
            vocab_size=len(tokenizer), n_positions=config.context_length, n_embd=config.d_model,
            n_layer=config.n_layers, n_head=config.n_heads, n_inner=config.d_ff, resid_pdrop=0.0,
            embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=eos, eos_token_id=eos, pad_token_id=pad,
        )
        model_cls = GPT2LMHeadModel
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = model_cls(hf_config)
    model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = pad
    model.generation_config.bos_token_id = None
    return model


def lr_at(step: int, total_steps: int, config: PretrainConfig) -> float:
    """Learning rate at ``step`` (0-based): linear warmup, then cosine to ``lr * min_lr_ratio``."""
    warmup = min(config.warmup_steps, max(total_steps - 1, 0))
    if step < warmup:
        return config.lr * (step + 1) / warmup
    progress = (step - warmup) / max(total_steps - warmup - 1, 1)
    floor = config.lr * config.min_lr_ratio
    return floor + (config.lr - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def tokenize_documents(documents: list[str], tokenizer: PreTrainedTokenizerBase) -> list[torch.Tensor]:
    """Each document's token ids followed by ``<eos>``, as 1-D int64 tensors."""
    ids = tokenizer(documents, add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    return [torch.tensor([*doc, eos], dtype=torch.long) for doc in ids]


def pack_blocks(docs: list[torch.Tensor], context_length: int, generator: torch.Generator) -> torch.Tensor:
    """Shuffle ``docs``, concatenate them and cut into blocks; the remainder is dropped.

    Returns a ``(n_blocks, context_length)`` tensor.
    """
    order = torch.randperm(len(docs), generator=generator)
    stream = torch.cat([docs[i] for i in order.tolist()])
    n_blocks = len(stream) // context_length
    if n_blocks == 0:
        raise ValueError(
            f"the corpus has {len(stream)} tokens, fewer than one block of {context_length}; "
            "lower context_length or build a larger world"
        )
    return stream[: n_blocks * context_length].view(n_blocks, context_length)


def _optimizer(model: torch.nn.Module, config: PretrainConfig) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.95), eps=1e-8)


def pretrain_corpus(
    corpus: str | list[str],
    tokenizer: PreTrainedTokenizerBase,
    out_dir: str | os.PathLike[str],
    config: PretrainConfig | None = None,
    progress: bool = False,
    source: str | None = None,
) -> PretrainResult:
    """Pretrain a fresh model on ``corpus`` (text with blank-line-separated documents, or a list of them).

    Args:
        corpus: the training text.
        tokenizer: the tokenizer (saved with the model).
        out_dir: the model folder and run directory to write.
        config: training settings; defaults to ``PretrainConfig()``.
        progress: show a rich progress bar with loss and tokens/s.
        source: where the corpus came from, recorded in summary.json.
    """
    cfg = config or PretrainConfig()
    start = time.perf_counter()
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads or auto_threads())
    try:
        out = init_run_dir(out_dir, cfg, seed=cfg.seed, device="cpu")
        documents = split_documents(corpus) if isinstance(corpus, str) else list(corpus)
        docs = tokenize_documents(documents, tokenizer)
        n_corpus_tokens = sum(len(d) for d in docs)
        generator = torch.Generator().manual_seed(cfg.seed)
        model = build_model(cfg, tokenizer)
        model.train()
        n_params = sum(p.numel() for p in model.parameters())
        blocks_per_epoch = n_corpus_tokens // cfg.context_length
        total = cfg.max_steps or max(1, math.ceil(cfg.epochs * blocks_per_epoch / cfg.batch_size))
        logger.info(
            "pretraining %s: %d params, %d corpus tokens, %d steps of %d x %d tokens, %d thread(s)",
            cfg.architecture, n_params, n_corpus_tokens, total, cfg.batch_size, cfg.context_length,
            torch.get_num_threads(),
        )
        optimizer = _optimizer(model, cfg)
        result = PretrainResult(out_dir=out, n_params=n_params, n_corpus_tokens=n_corpus_tokens)
        log_rows, tokens_seen, loop_s = _train_loop(model, optimizer, docs, cfg, total, generator, result.losses,
                                                    progress)
        result.steps = total
        result.tokens_per_s = tokens_seen / loop_s if loop_s > 0 else float("nan")
        model.eval()
        result.model = model
        model.save_pretrained(str(out), safe_serialization=True)
        save_tokenizer(tokenizer, out)
        write_text(out / "pretrain_log.jsonl", "".join(f"{json.dumps(r)}\n" for r in log_rows))
        result.wall_s = time.perf_counter() - start
        write_json(out / "summary.json", {
            "source": source, "n_params": n_params, "n_corpus_tokens": n_corpus_tokens, "steps": total,
            "epochs": total * cfg.batch_size * cfg.context_length / max(n_corpus_tokens, 1),
            "first_loss": result.losses[0], "final_loss": result.final_loss,
            "tokens_per_s": result.tokens_per_s, "train_s": loop_s, "wall_s": result.wall_s,
            "threads": torch.get_num_threads(), "config": asdict(cfg),
        })
        logger.info("pretrained in %.1f s: loss %.3f -> %.3f, %.0f tok/s; saved to %s",
                    result.wall_s, result.losses[0], result.final_loss, result.tokens_per_s, out)
        return result
    finally:
        torch.set_num_threads(prev_threads)


def _train_loop(model: Any, optimizer: torch.optim.Optimizer, docs: list[torch.Tensor], cfg: PretrainConfig,
                total: int, generator: torch.Generator, losses: list[float],
                progress: bool) -> tuple[list[dict[str, Any]], int, float]:
    """``total`` optimiser steps on packed blocks of ``docs`` (repacked when used up); appends each step's loss
    to ``losses``; returns the log rows, the tokens seen and the loop's seconds."""
    log_rows: list[dict[str, Any]] = []
    blocks, cursor = pack_blocks(docs, cfg.context_length, generator), 0
    loop_start, tokens_seen = time.perf_counter(), 0
    with progress_bar(total, "pretrain", unit="steps", enabled=progress) as advance:
        for step in range(total):
            if cursor + cfg.batch_size > len(blocks):
                blocks, cursor = pack_blocks(docs, cfg.context_length, generator), 0
            batch = blocks[cursor : cursor + cfg.batch_size]  # (batch, context_length)
            cursor += cfg.batch_size
            lr = lr_at(step, total, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss = model(input_ids=batch, labels=batch).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            max_norm = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
            grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm))
            optimizer.step()
            tokens_seen += batch.numel()
            elapsed = time.perf_counter() - loop_start
            loss_value = float(loss.detach())
            losses.append(loss_value)
            log_rows.append({
                "step": step + 1, "loss": loss_value, "lr": lr, "grad_norm": grad_norm,
                "tokens": tokens_seen, "elapsed_s": round(elapsed, 3),
            })
            advance(1, status=f"loss {loss_value:.3f}  {tokens_seen / elapsed:,.0f} tok/s")
            if (step + 1) % cfg.log_every == 0 or step + 1 == total:
                logger.info("step %d/%d loss %.4f lr %.2e %.0f tok/s", step + 1, total, loss_value, lr,
                            tokens_seen / elapsed)
    return log_rows, tokens_seen, time.perf_counter() - loop_start


def pretrain(
    world_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    config: PretrainConfig | None = None,
    progress: bool = False,
) -> PretrainResult:
    """Pretrain a fresh model on the corpus of the world written in ``world_dir`` (``write_world``).

    The world's tokenizer is used and saved with the model; see :func:`pretrain_corpus`.
    """
    world = Path(world_dir)
    corpus_path = world / "corpus.txt"
    if not corpus_path.exists():
        raise FileNotFoundError(f"{world} has no corpus.txt; write a world there first (`massshift world`)")
    tokenizer = load_world_tokenizer(world)
    corpus = corpus_path.read_text(encoding="utf-8")
    return pretrain_corpus(corpus, tokenizer, out_dir, config, progress=progress, source=str(world))
