"""Memory and speed of scoring as the number of facts grows: peak RSS and facts/s at 1k, 10k, 100k.

For each size, in a fresh process (so peaks do not mix), on a tiny random Llama:

1. ``massshift``: ``score_to_cache`` (chunks written as they finish) then ``write_score_table``
   (scores.parquet streamed one row group per chunk), which is what ``massshift score`` runs;
2. the anchor, in another fresh process, from the same cache: ``score_facts`` (every chunk read
   and concatenated, states added on the whole table) then ``DataFrame.to_parquet``, which is
   what ``score`` did before streaming. Its time is not comparable (nothing is computed), only
   its peak memory is.

Peak RSS is the child's ``ru_maxrss``; the baseline RSS (Python, torch, the model) is printed
too, so the growth with the number of facts reads off directly.

    python benchmarks/bench_scale.py --sizes 1000 10000 100000 --threads 1
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def make_facts(n: int):
    import pandas as pd

    syll = ["ka", "lo", "mi", "ra", "tu", "ve", "no", "si", "be", "da"]

    def name(i: int) -> str:
        s = []
        for _ in range(3):
            s.append(syll[i % 10])
            i //= 10
        return "".join(s).capitalize()

    rel = ["city", "employer", "field"]
    return pd.DataFrame({
        "fact_id": [f"f{i}" for i in range(n)],
        "question": [f"Where is {name(i)} {name(i // 7)} from, by {rel[i % 3]}?" for i in range(n)],
        "answers": [[name(i * 31 + 5)] for i in range(n)],
        "relation": [rel[i % 3] for i in range(n)],
    })


def child(mode: str, n: int, cache: str, out: str, threads: int, distractors: int) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    import torch

    from conftest import make_model, make_tokenizer
    from massshift.lm.sampling import GenerationConfig
    from massshift.score.table import ScoreConfig, score_facts, score_to_cache, write_score_table

    torch.set_num_threads(threads)
    tok = make_tokenizer()
    model = make_model(len(tok))
    facts = make_facts(n)
    cfg = ScoreConfig(generation=GenerationConfig(n_samples=4, max_new_tokens=4), distractors=distractors)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    if mode == "stream":
        plan = score_to_cache(model, tok, facts, cfg, model_key="bench", cache_dir=cache)
        write_score_table(plan, out, "bench")
    else:
        table = score_facts(model, tok, facts, cfg, model_key="bench", cache_dir=cache, label="bench")
        table.to_parquet(out, index=False)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"mode": mode, "facts": n, "s": seconds, "base_rss_mb": base_rss / 1024,
                      "peak_rss_mb": peak / 1024}))


def run(mode: str, n: int, cache: str, out: str, threads: int, distractors: int) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--sizes", str(n), "--cache", cache, "--out", out,
           "--threads", str(threads), "--distractors", str(distractors)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise SystemExit(f"{mode} {n} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--distractors", type=int, default=0)
    ap.add_argument("--child", choices=["stream", "memory"])
    ap.add_argument("--cache")
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.child:
        child(args.child, args.sizes[0], args.cache, args.out, args.threads, args.distractors)
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            cache = str(Path(tmp) / f"cache{n}")
            s = run("stream", n, cache, str(Path(tmp) / f"s{n}.parquet"), args.threads, args.distractors)
            m = run("memory", n, cache, str(Path(tmp) / f"m{n}.parquet"), args.threads, args.distractors)
            rows.append((n, s, m))
            print(f"{n} facts: streamed {s['peak_rss_mb']:.0f} MB peak ({s['facts'] / s['s']:.0f} facts/s), "
                  f"in-memory merge {m['peak_rss_mb']:.0f} MB", flush=True)
    print()
    print("| facts | massshift facts/s | base RSS MB | massshift peak RSS MB | in-memory merge peak RSS MB |")
    print("|---|---|---|---|---|")
    for n, s, m in rows:
        print(f"| {n} | {s['facts'] / s['s']:.0f} | {s['base_rss_mb']:.0f} | {s['peak_rss_mb']:.0f} | "
              f"{m['peak_rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
