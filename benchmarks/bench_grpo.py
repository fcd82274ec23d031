"""Steps per second of massshift's GRPO trainer against TRL's GRPOTrainer, matched settings, on CPU.

Both engines start from the same tiny Llama (the test-fixture architecture,
about 60k parameters, byte-level BPE vocabulary of 300), warm-started with a
short SFT run that teaches the answer format and the set of capitals but not
which capital goes with which country (the right pairing appears twice, so it
sits in the samples' tail). Then each engine runs the same GRPO settings:
``batch`` questions x G completions per step, temperature 1, the same
max_new_tokens, lr, beta 0, epsilon 0.2, one iteration, token-level (dapo)
loss aggregation, constant lr, one CPU thread.

Timing: massshift's training loop (from the first rollout to the last
optimizer step, log writing included) against TRL's ``trainer.train()``
between ``on_train_begin`` and ``on_train_end``. Model loading, dataset
building and saving are outside both. The script prints both reward curves
side by side and the ratio (target: massshift >= 1.5x TRL).

The real case (``--model smollm2-135m --lora-r 16``, issue 18): SmolLM2-135M-Instruct with LoRA on real
country facts (``data.countries``, seeded, a new batch each step), the plain ``Q:/A:`` template, ``contains`` matching (TRL
re-tokenises chat prompts, so the chat template would not be matched), no warm start, otherwise the same
matched settings.

    .venv/bin/python benchmarks/bench_grpo.py [--steps 40] [--G 8] [--batch 4] [--max-new-tokens 16]
    .venv/bin/python benchmarks/bench_grpo.py --model smollm2-135m --lora-r 16 --steps 6 --batch 8 --G 8 \
        --max-new-tokens 12 --lr 3e-4
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the fixture-style tokenizer and model builders

from conftest import make_model, make_tokenizer  # noqa: E402
from massshift.train.grpo import GRPOConfig, train_grpo  # noqa: E402
from massshift.train.sft import SFTConfig, train_sft  # noqa: E402

CAPITALS = [("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid")]


def task() -> tuple[pd.DataFrame, pd.DataFrame]:
    """The GRPO facts and the SFT warm-start data (every pairing, the right one twice)."""
    qs = [f"What is the capital of {c}?" for c, _ in CAPITALS]
    facts = pd.DataFrame([{"fact_id": str(i), "question": q, "answers": [a]}
                          for i, (q, (_, a)) in enumerate(zip(qs, CAPITALS))])
    warm = pd.DataFrame([{"fact_id": f"{i}-{j}-{k}", "question": q, "answers": [a]}
                         for i, q in enumerate(qs) for j, (_, a) in enumerate(CAPITALS) for k in range(1 + (i == j))])
    return facts, warm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--G", type=int, default=8)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--warm-steps", type=int, default=60, help="SFT warm-start steps (0: untrained model)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default="", help="a load_model spec (e.g. smollm2-135m): real country facts, "
                    "no warm start; empty: the tiny model")
    ap.add_argument("--lora-r", type=int, default=0, help="LoRA rank for both engines (0: full fine-tuning)")
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from transformers.utils import logging as hf_logging

    from massshift.train.trl_engine import train_grpo_trl

    hf_logging.disable_progress_bar()
    facts, warm = task()
    if a.model:
        from massshift.data.countries import country_facts

        facts = country_facts().sample(n=a.steps * a.batch, random_state=a.seed).reset_index(drop=True)
    cfg = GRPOConfig(steps=a.steps, batch_size=a.batch, num_generations=a.G, lr=a.lr, lora_r=a.lora_r,
                     max_new_tokens=a.max_new_tokens, save_every=0, eval_every=0, seed=a.seed, threads=1,
                     match_mode="contains" if a.model else "exact")  # SmolLM2 answers in sentences
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if a.model:
            from massshift.lm.loading import load_model

            start = a.model
            ours_model, ours_tok, _ = load_model(a.model)
            ours_model.train()
        else:
            tokenizer = make_tokenizer()
            model = make_model(len(tokenizer))
            if a.warm_steps:
                train_sft(model, tokenizer, warm, tmp / "sft", SFTConfig(steps=a.warm_steps, batch_size=20, lr=3e-3))
            start = tmp / "start"
            model.save_pretrained(start)
            tokenizer.save_pretrained(start)
            ours_model, ours_tok = AutoModelForCausalLM.from_pretrained(start), AutoTokenizer.from_pretrained(start)
        ours = train_grpo(ours_model, ours_tok, facts, tmp / "ours", cfg)
        import json

        ours_sps = json.loads((tmp / "ours" / "summary.json").read_text())["steps_per_second"]

        class Clock(TrainerCallback):
            def on_train_begin(self, args, state, control, **kw):  # noqa: ANN001
                self.t0 = time.perf_counter()

            def on_train_end(self, args, state, control, **kw):  # noqa: ANN001
                self.seconds = time.perf_counter() - self.t0

        clock = Clock()
        trl = train_grpo_trl(start, facts, tmp / "trl", cfg, callbacks=[clock], use_cpu=True)
        trl_sps = a.steps / clock.seconds

    o = ours.log.dropna(subset=["reward_mean"]).set_index("step")
    t = trl.log.dropna(subset=["reward_mean"]).set_index("step")
    print(f"settings: steps {a.steps}, questions/step {a.batch}, G {a.G}, max_new_tokens {a.max_new_tokens}, "
          f"lr {a.lr}, LoRA r {a.lora_r or '-'}, model {a.model or 'tiny'}, "
          f"SFT warm start {0 if a.model else a.warm_steps} steps, 1 CPU thread, torch {torch.__version__}")
    print(f"{'step':>5} {'massshift reward':>17} {'TRL reward':>11} {'massshift len':>14} {'TRL len':>8}")
    for s in range(1, a.steps + 1, max(1, a.steps // 20)):
        print(f"{s:>5} {o.loc[s, 'reward_mean']:>17.3f} {t.loc[s, 'reward_mean']:>11.3f} "
              f"{o.loc[s, 'completion_len']:>14.2f} {t.loc[s, 'completion_len']:>8.2f}")
    for name, d in (("massshift", o), ("TRL", t)):
        print(f"{name:>10}: reward first 5 steps {d['reward_mean'].head(5).mean():.3f}, "
              f"last 5 {d['reward_mean'].tail(5).mean():.3f}")
    print(f"massshift: {ours_sps:.2f} steps/s, median step {o['seconds'].median():.3f} s")
    print(f"TRL      : {trl_sps:.2f} steps/s, median step {t['seconds'].median():.3f} s")
    print(f"ratio massshift / TRL: {ours_sps / trl_sps:.2f}x (target >= 1.5x)")


if __name__ == "__main__":
    main()
