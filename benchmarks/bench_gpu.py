"""GPU throughput of scoring: teacher forcing and n=32 sampling, in bf16, with the achieved
share of the GPU's measured bf16 matmul peak. One prepared script, run once per lease.

For each model shape (SmolLM2-135M's config, and a 1.1B Llama shape), randomly initialised
in bf16 (the weights do not change the cost; a random model never emits the terminator, so
every sample runs the full ``max_new_tokens``: the worst case), it times in the same run:

1. teacher forcing with massshift (``scoring.score_items``: one prompt pass per fact, aliases
   on its KV cache) at several row budgets, against the plain anchor: one padded forward
   over every (prompt + alias) row, batched;
2. n=32 sampling with massshift (``generation.generate``) at several ``max_rows``, against
   ``transformers``' ``model.generate(num_return_sequences=32)`` on batches of prompts;
3. the whole ``score_table.score_facts`` (teacher forcing + greedy + 32 samples).

Model FLOP utilisation (MFU) = 2 x parameters x tokens processed / time / peak, where the
peak is an 8192^3 bf16 matmul timed in the same run. Tokens processed counts real tokens
(prompt once, every alias or generated token once), not padding.

    python benchmarks/bench_gpu.py --tokenizer DIR --out results.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_scoring import make_facts  # noqa: E402

from massshift.lm.logprobs import ScoringConfig, score_items  # noqa: E402
from massshift.lm.prompts import PromptConfig, build_prompt, encode_facts, encode_prompt  # noqa: E402
from massshift.lm.sampling import GenerationConfig, generate  # noqa: E402

SHAPES = {
    # SmolLM2-135M's own config (read from the tokenizer folder's config.json when present)
    "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, tie_word_embeddings=True, rope_theta=100000.0),
    # TinyLlama-1.1B's shape with SmolLM2's vocabulary
    "smoke": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                  num_key_value_heads=2, tie_word_embeddings=True, rope_theta=10000.0),
    "llama-1.1b": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                       num_key_value_heads=4, tie_word_embeddings=False, rope_theta=10000.0),
}


DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def timed(fn, repeats: int = 1):
    sync()
    t0 = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    sync()
    return out, (time.perf_counter() - t0) / repeats


def matmul_peak(size: int) -> float:
    a = torch.randn(size, size, device=DEVICE, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=DEVICE, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    _, t = timed(lambda: a @ b, repeats=10)
    return 2 * size**3 / t


def build_model(shape: str, vocab: int, tok):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab, max_position_embeddings=2048, pad_token_id=tok.pad_token_id,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, **SHAPES[shape])
    with torch.device(DEVICE):
        model = LlamaForCausalLM(cfg).to(torch.bfloat16).eval()
    return model, sum(p.numel() for p in model.parameters())


def bench_tf(model, n_params, tok, questions, answers, peak, row_budgets) -> list[dict]:
    cfg = PromptConfig()
    items = encode_facts(tok, questions, answers, cfg)
    tokens = sum(len(p) + sum(len(c) for c in cs) for p, cs in items)
    out = []
    score_items(model, items[:64], tok.pad_token_id, ScoringConfig(batch_size=256))  # warm-up
    for rows in row_budgets:
        _, t = timed(lambda rows=rows: score_items(model, items, tok.pad_token_id, ScoringConfig(batch_size=rows)))
        out.append({"what": "massshift TF", "rows": rows, "facts": len(items), "s": t, "facts_s": len(items) / t,
                    "tokens": tokens, "mfu": 2 * n_params * tokens / t / peak})
    # anchor: every (prompt + alias) row as one padded sequence, plain batched forward
    seqs = [p + c for p, cs in items for c in cs]
    anchor_tokens = sum(len(s) for s in seqs)

    @torch.inference_mode()
    def plain(batch: int) -> None:
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
        for s in range(0, len(order), batch):
            chunk = [seqs[i] for i in order[s: s + batch]]
            width = max(len(x) for x in chunk)
            ids = torch.full((len(chunk), width), tok.pad_token_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for j, x in enumerate(chunk):
                ids[j, : len(x)] = torch.tensor(x)
                mask[j, : len(x)] = 1
            logits = model(input_ids=ids.to(DEVICE), attention_mask=mask.to(DEVICE)).logits
            torch.log_softmax(logits.float(), -1)

    plain(256)
    for rows in row_budgets:
        _, t = timed(lambda rows=rows: plain(rows))
        out.append({"what": "plain padded forward", "rows": rows, "facts": len(items), "s": t,
                    "facts_s": len(items) / t, "tokens": anchor_tokens, "mfu": 2 * n_params * anchor_tokens / t / peak})
    return out


def bench_sampling(model, n_params, tok, questions, peak, n, max_new, row_budgets) -> list[dict]:
    cfg = PromptConfig()
    prompts = [encode_prompt(tok, build_prompt(q, cfg), cfg) for q in questions]
    ids = [str(i) for i in range(len(prompts))]
    out = []
    generate(model, prompts[:8], ids[:8], tok, GenerationConfig(n_samples=n, max_new_tokens=max_new))
    for rows in row_budgets:
        gcfg = GenerationConfig(n_samples=n, max_new_tokens=max_new, max_rows=rows)
        gens, t = timed(lambda gcfg=gcfg: generate(model, prompts, ids, tok, gcfg))
        gen_tokens = sum(len(g.greedy_ids) + sum(len(s) for s in g.sample_ids) for g in gens)
        tokens = gen_tokens + sum(len(p) for p in prompts)
        out.append({"what": "massshift sampling", "rows": rows, "facts": len(prompts), "n": n, "s": t,
                    "facts_s": len(prompts) / t, "generated_tokens": gen_tokens,
                    "mfu": 2 * n_params * tokens / t / peak})
    # anchor: transformers' generate, num_return_sequences=n, batches of prompts (left-padded)
    tok.padding_side = "left"
    texts = [build_prompt(q, cfg) for q in questions]

    @torch.inference_mode()
    def hf(facts_per_batch: int) -> int:
        made = 0
        for s in range(0, len(texts), facts_per_batch):
            enc = tok(texts[s: s + facts_per_batch], return_tensors="pt", padding=True).to(DEVICE)
            res = model.generate(**enc, do_sample=True, top_k=0, temperature=1.0, max_new_tokens=max_new,
                                 num_return_sequences=n, pad_token_id=tok.pad_token_id)
            made += int((res[:, enc["input_ids"].shape[1]:] != tok.pad_token_id).sum())
        return made

    hf(4)
    for rows in row_budgets:
        per = max(1, rows // n)
        made, t = timed(lambda per=per: hf(per))
        out.append({"what": "transformers generate", "rows": per * n, "facts": len(texts), "n": n, "s": t,
                    "facts_s": len(texts) / t, "generated_tokens": made,
                    "mfu": 2 * n_params * (made + sum(len(p) for p in prompts)) / t / peak})
    return out


def bench_score_facts(model, tok, questions, answers, n, rows) -> dict:
    import pandas as pd

    from massshift.score.table import ScoreConfig, score_facts

    facts = pd.DataFrame({"fact_id": [f"f{i}" for i in range(len(questions))], "question": questions,
                          "answers": answers})
    cfg = ScoreConfig(generation=GenerationConfig(n_samples=n, max_rows=rows), scoring=ScoringConfig(batch_size=rows),
                      chunk_size=len(facts))
    _, t = timed(lambda: score_facts(model, tok, facts, cfg))
    return {"what": "score_facts (TF + greedy + n samples)", "facts": len(facts), "n": n, "rows": rows, "s": t,
            "facts_s": len(facts) / t}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokenizer", required=True, help="a folder with SmolLM2's tokenizer files")
    ap.add_argument("--out", required=True)
    ap.add_argument("--facts", type=int, default=2000)
    ap.add_argument("--sample-facts", type=int, default=512)
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--smoke", action="store_true", help="a seconds-long CPU check of this script (tiny shape)")
    ap.add_argument("--budget-s", type=float, default=420, help="skip what would start after this many seconds")
    args = ap.parse_args()
    from transformers import AutoTokenizer

    t_start = time.perf_counter()
    results: dict = {"device": torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu", "torch": torch.__version__, "runs": []}

    def save() -> None:
        Path(args.out).write_text(json.dumps(results, indent=1))

    def section(name, fn):
        if time.perf_counter() - t_start > args.budget_s:
            print(f"skipped {name}: over budget", flush=True)
            return
        t0 = time.perf_counter()
        try:
            rows = fn()
            for r in rows if isinstance(rows, list) else [rows]:
                r["section"] = name
                results["runs"].append(r)
                print(json.dumps(r), flush=True)
        except Exception:  # a failed section must not lose the others' numbers
            results.setdefault("errors", []).append({"section": name, "error": traceback.format_exc()})
            print(f"{name} failed:\n{traceback.format_exc()}", flush=True)
        print(f"{name}: {time.perf_counter() - t0:.1f} s", flush=True)
        save()

    import transformers

    results["transformers"] = transformers.__version__
    results["peak_bf16_flops"] = matmul_peak(512 if args.smoke else 8192)
    print(f"bf16 matmul peak: {results['peak_bf16_flops'] / 1e12:.0f} TFLOP/s", flush=True)
    tok = AutoTokenizer.from_pretrained(args.tokenizer)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    questions, answers = make_facts(args.facts, 3)
    shapes = ["smoke"] if args.smoke else [s for s in SHAPES if s != "smoke"]
    budgets = (16, 64) if args.smoke else (128, 1024, 8192)
    for shape in shapes:
        model, n_params = build_model(shape, len(tok), tok)
        results.setdefault("params", {})[shape] = n_params
        print(f"{shape}: {n_params / 1e6:.1f} M parameters", flush=True)
        section(f"{shape} teacher forcing", lambda model=model, n_params=n_params: bench_tf(model, n_params, tok, questions, answers,
                                                             results["peak_bf16_flops"], budgets))
        section(f"{shape} sampling", lambda model=model, n_params=n_params: bench_sampling(
            model, n_params, tok, questions[: args.sample_facts], results["peak_bf16_flops"], args.n,
            args.max_new_tokens, (66, 132) if args.smoke else (256, 2048, 8192)))
        section(f"{shape} score_facts", lambda model=model: bench_score_facts(
            model, tok, questions[: args.sample_facts], answers[: args.sample_facts], args.n, budgets[-1]))
        model = None  # free it before the next shape
        if DEVICE == "cuda":
            torch.cuda.empty_cache()
    results["wall_s"] = time.perf_counter() - t_start
    save()


if __name__ == "__main__":
    main()
