"""Every option shared by two or more commands, defined once (typer ``Annotated`` aliases)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from massshift.score import DEFAULT_DISTRACTORS

Samples = Annotated[int, typer.Option("--samples", "-n", help="Samples per fact (0: greedy only). Paper: 128.")]
Temperature = Annotated[float, typer.Option(help="Sampling temperature (0: greedy).")]
TopP = Annotated[float, typer.Option("--top-p", help="Nucleus truncation (1.0: none).")]
MaxNew = Annotated[int, typer.Option("--max-new-tokens", help="Longest answer generated, in tokens.")]
Seed = Annotated[int, typer.Option(help="Seed; samples are seeded per (seed, fact_id).")]
SeedGiven = Annotated[int | None, typer.Option("--seed", help="Seed (default: the --config file's, else the setting's default).")]
BatchSize = Annotated[int, typer.Option("--batch-size", help="Rows per forward pass: teacher-forcing continuations (aliases, distractors), and decoding rows, facts x (1 + samples), at least 256. Thousands on a GPU. Changes numbers only by float round-off.")]
Dtype = Annotated[str, typer.Option(help="float32, bfloat16 or float16.")]
Device = Annotated[str, typer.Option(help="cpu, cuda, cuda:1, mps ...")]
Threads = Annotated[int | None, typer.Option(help="Torch CPU threads (default: measured best for this machine).")]
Template = Annotated[str, typer.Option(help="Prompt template with {question}.")]
Chat = Annotated[bool, typer.Option("--chat/--no-chat", help="Use the tokenizer's chat template.")]
ChatAuto = Annotated[bool | None, typer.Option("--chat/--no-chat", help="Use the tokenizer's chat template. Default: off, except for the built-in default facts, which are asked through the chat template when the tokenizer has one.")]
Instruction = Annotated[str, typer.Option(help="With --chat: a line before the question.")]
ChatAnswer = Annotated[bool, typer.Option("--chat-answer/--plain-answer", help="With --chat: score the answer as the chat template writes an assistant turn (no leading space, ended by its end-of-turn marker, '\\n' also accepted; default), or as the plain ' ANSWER' + terminator.")]
AnswerPrefix = Annotated[str, typer.Option("--answer-prefix", help="Answer prefill (the bare answer is scored after it; default none): TEXT (fixed; may use {subject}), @FILE.yaml (relation: template, optional default:), or self (the model's own greedy lead-in before the first alias or distractor).")]
Judge = Annotated[str | None, typer.Option("--judge", help="A judge model (any checkpoint massshift loads, e.g. smollm2-135m) that grades the answers --match rejects, by its yes/no log-probability under a fixed prompt (massshift.lm.judge); verdicts cached; OUT/judge.json says how many it changed.")]
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
ConfigOpt = Annotated[str | None, typer.Option("--config", help="Model config (and tokenizer) for a bare state-dict file: a model folder, a cached hub id or a named model (smollm2-135m). Not needed for massshift .ckpt files.")]
FactsArg = Annotated[Path | None, typer.Option("--facts", "-f", help="Facts: a file (.jsonl, .json, .csv, .parquet) or hf:NAME[:SPLIT] (a Hugging Face dataset in the local cache). Default: the held-out facts named in massshift .ckpt checkpoints.")]
DeviceMap = Annotated[str | None, typer.Option("--device-map", help="'auto' to spread a large model over devices.")]
NoProgress = Annotated[bool, typer.Option("--no-progress", help="Hide progress bars.")]

# trainers and baselines
ModelArg = Annotated[str, typer.Argument(help="Checkpoint to train (any form `massshift score` loads).")]
FactsOpt = Annotated[Path, typer.Option("--facts", "-f", help="Training facts file.")]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Run directory (checkpoints/, final/, train_log.jsonl).")]
EvalOpt = Annotated[Path | None, typer.Option("--eval-facts", help="Held-out facts for greedy accuracy during training.")]
ConfigYaml = Annotated[Path | None, typer.Option("--config", help="YAML file of trainer settings.")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Any trainer setting as field=value (repeatable).")]
WriteCkpt = Annotated[bool, typer.Option("--ckpt/--no-ckpt", help="Also write OUT/base.ckpt and OUT/<rl|sft|rft|dpo>.ckpt: self-describing files carrying the --eval-facts, so `massshift compare base.ckpt rl.ckpt` in OUT needs no other argument.")]
Resume = Annotated[bool, typer.Option("--resume", help="Continue from the last checkpoint in OUT.")]
Steps = Annotated[int | None, typer.Option(help="Optimizer steps.")]
StepBatch = Annotated[int | None, typer.Option("--batch-size", help="Questions (RL) or examples (SFT) per step.")]
Lr = Annotated[float | None, typer.Option(help="AdamW learning rate.")]
LoraR = Annotated[int | None, typer.Option("--lora-r", help="LoRA rank (0: full fine-tuning).")]
MatchOpt = Annotated[str | None, typer.Option("--match", help="exact or contains.")]
MaxCompletion = Annotated[int | None, typer.Option("--max-new-tokens", help="Longest completion.")]
SaveEvery = Annotated[int | None, typer.Option("--save-every", help="Checkpoint every N steps (0: final only).")]
EvalEvery = Annotated[int | None, typer.Option("--eval-every", help="Held-out greedy accuracy every N steps.")]
Controls = Annotated[int | None, typer.Option("--controls", help="Never-seen controls per relation: questions about invented subjects, scored with the rest and kept out of every other number (their tail-correct share is each criterion's false-positive rate). Default: 8 where the facts name a subject and a relation and the question contains the subject; 0: none.")]
