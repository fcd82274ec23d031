"""Scoring speed: massshift against lm-evaluation-harness and naive loops, in the same run.

Times, on the same model and the same facts (default 200 facts x 3 aliases):

1. teacher forcing: massshift (one prompt pass per fact, batched, length-sorted) vs
   lm-eval's ``HFLM.loglikelihood`` on the same (context, continuation) requests, and vs a
   naive loop that runs one request at a time; checks that the log-probs agree;
2. sampling n answers per fact: massshift (one prompt pass, 1 + n rows decoded together)
   vs a naive loop of single-sample ``model.generate`` calls.

Prints facts/s and the ratios. Needs ``pip install lm-eval`` (``make bench`` installs it).

    python benchmarks/bench_scoring.py --model tiny --model smollm2-135m --threads 1
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from massshift.lm.logprobs import ScoringConfig, score_items  # noqa: E402
from massshift.lm.prompts import PromptConfig, build_prompt, continuation, encode_facts, encode_prompt  # noqa: E402
from massshift.lm.sampling import GenerationConfig, generate  # noqa: E402

WORDS = ("Paris Berlin Rome Madrid Tokyo Lisbon Vienna Warsaw Prague Oslo Cairo Lima Quito Accra Dakar "
         "river mountain lake city island capital currency language region king queen author painter").split()
RELATIONS = ("capital", "currency", "official language", "largest city", "founder", "birth place")


def make_facts(n: int, n_aliases: int, seed: int = 0) -> tuple[list[str], list[list[str]]]:
    rng = random.Random(seed)
    questions, answers = [], []
    for i in range(n):
        subject = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 3)))
        questions.append(f"What is the {rng.choice(RELATIONS)} of {subject} number {i}?")
        answers.append([" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 3))) for _ in range(n_aliases)])
    return questions, answers


def load(name: str):
    if name == "tiny":
        from conftest import make_tokenizer
        from massshift.lm.loading import hash_weights  # noqa: F401  (same import cost for both paths)

        tok = make_tokenizer()
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.manual_seed(0)
        cfg = LlamaConfig(vocab_size=len(tok), hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
                          num_key_value_heads=4, intermediate_size=256, max_position_embeddings=512,
                          pad_token_id=0, bos_token_id=1, eos_token_id=1)
        return LlamaForCausalLM(cfg).eval(), tok
    from massshift.lm.loading import load_model

    model, tok, _ = load_model(name)
    return model, tok


def bench_teacher_forcing(model, tok, questions, answers, batch_size: int) -> dict:
    cfg = PromptConfig()
    prompts = [build_prompt(q, cfg) for q in questions]
    t0 = time.perf_counter()
    items = encode_facts(tok, questions, answers, cfg)
    ours = score_items(model, items, tok.pad_token_id, ScoringConfig(batch_size=batch_size))
    t_ours = time.perf_counter() - t0
    ours_flat = [lp for r in ours for lp in r.alias_logps]

    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=batch_size, device="cpu", dtype="float32",
              logits_cache=False)
    reqs = [Instance("loglikelihood", {}, (p, continuation(a, cfg)), i)
            for i, (p, al) in enumerate(zip(prompts, answers)) for a in al]
    t0 = time.perf_counter()
    theirs = [lp for lp, _ in lm.loglikelihood(reqs, disable_tqdm=True)]
    t_lmeval = time.perf_counter() - t0

    t0 = time.perf_counter()
    naive = []
    with torch.inference_mode():
        for p, conts in items:
            for c in conts:
                logp = torch.log_softmax(model(torch.tensor([p + c])).logits[0].float(), -1)
                naive.append(sum(logp[len(p) - 1 + j, t].item() for j, t in enumerate(c)))
    t_naive = time.perf_counter() - t0
    return {
        "facts": len(questions), "rows": len(ours_flat), "ours_s": t_ours, "lmeval_s": t_lmeval, "naive_s": t_naive,
        "max_diff_lmeval": max(abs(a - b) for a, b in zip(ours_flat, theirs)),
        "max_diff_naive": max(abs(a - b) for a, b in zip(ours_flat, naive)),
    }


def bench_sampling(model, tok, questions, n: int, max_new_tokens: int) -> dict:
    cfg = PromptConfig()
    prompts = [encode_prompt(tok, build_prompt(q, cfg), cfg) for q in questions]
    gcfg = GenerationConfig(n_samples=n, max_new_tokens=max_new_tokens, max_rows=max(256, n + 1))
    t0 = time.perf_counter()
    gens = generate(model, prompts, [str(i) for i in range(len(prompts))], tok, gcfg)
    t_ours = time.perf_counter() - t0
    ours_len = sum(len(s) for g in gens for s in g.sample_ids) / (n * len(gens))
    t0 = time.perf_counter()
    lengths = []
    torch.manual_seed(0)
    for p in prompts:
        ids = torch.tensor([p])
        for _ in range(n):
            out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True, top_k=0,
                                 temperature=1.0, max_new_tokens=max_new_tokens, stop_strings="\n",
                                 tokenizer=tok, pad_token_id=tok.pad_token_id)
            lengths.append(out.shape[1] - len(p))
    t_naive = time.perf_counter() - t0
    return {"facts": len(prompts), "n": n, "ours_s": t_ours, "naive_s": t_naive,
            "ours_mean_len": ours_len, "naive_mean_len": sum(lengths) / len(lengths)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", help="tiny and/or smollm2-135m (default: both)")
    ap.add_argument("--facts", type=int, default=200)
    ap.add_argument("--aliases", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--sample-facts", type=int, default=None, help="facts for the sampling benchmark")
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    questions, answers = make_facts(args.facts, args.aliases)
    for name in args.model or ["tiny", "smollm2-135m"]:
        model, tok = load(name)
        n_params = sum(p.numel() for p in model.parameters())
        print(f"\n== {name} ({n_params / 1e6:.1f}M parameters, {args.threads} thread(s))")
        tf = bench_teacher_forcing(model, tok, questions, answers, args.batch_size)
        print(f"teacher forcing, {tf['facts']} facts x {args.aliases} aliases ({tf['rows']} requests):")
        print(f"  massshift {tf['facts'] / tf['ours_s']:8.1f} facts/s  ({tf['ours_s']:.2f} s)")
        print(f"  lm-eval   {tf['facts'] / tf['lmeval_s']:8.1f} facts/s  ({tf['lmeval_s']:.2f} s)"
              f"  -> massshift is {tf['lmeval_s'] / tf['ours_s']:.2f}x lm-eval")
        print(f"  naive     {tf['facts'] / tf['naive_s']:8.1f} facts/s  ({tf['naive_s']:.2f} s)"
              f"  -> massshift is {tf['naive_s'] / tf['ours_s']:.2f}x naive")
        print(f"  agreement: max |logp diff| vs lm-eval {tf['max_diff_lmeval']:.2e}, vs naive {tf['max_diff_naive']:.2e}")
        k = args.sample_facts or (20 if name == "tiny" else 4)
        sp = bench_sampling(model, tok, questions[:k], args.samples, args.max_new_tokens)
        print(f"sampling n={sp['n']} on {sp['facts']} facts:")
        print(f"  massshift {sp['facts'] / sp['ours_s']:8.3f} facts/s  ({sp['ours_s']:.2f} s, mean {sp['ours_mean_len']:.1f} tokens)")
        print(f"  naive     {sp['facts'] / sp['naive_s']:8.3f} facts/s  ({sp['naive_s']:.2f} s, mean {sp['naive_mean_len']:.1f} tokens)"
              f"  -> massshift is {sp['naive_s'] / sp['ours_s']:.2f}x naive")


if __name__ == "__main__":
    main()
