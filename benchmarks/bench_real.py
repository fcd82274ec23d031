"""Scoring real facts end to end: massshift's score table against the roofline and the anchors, in one run.

Two real workloads, scored with SmolLM2-135M-Instruct through ``score.table.score_facts`` (what
``massshift score`` runs), with the default distractors (``score.DEFAULT_DISTRACTORS``) and n samples:

- ``popqa``: popular PopQA facts (``../shared/data/popqa/s_pop_100000_to_inf.parquet``) with all their
  aliases, plain ``Q:/A:`` prompt;
- ``countries``: country facts (``data.countries``) under the chat template with the country study's
  system line and instruction ("Answer with the name only.").

For each workload and each n it prints facts/s; the tokens the model processed (real tokens: each
prompt once per pass, each teacher-forced or decoded token once) and the GFLOP/s they mean
(2 x parameters x tokens / time) against a float32 matmul peak measured in the same run on the same
threads; the time split between prompt passes, teacher forcing, decoding, tokenising and bookkeeping
(the rest: distractor draws, matching, tables); and, on the same facts, the anchors as ratios:
lm-evaluation-harness's ``HFLM.loglikelihood`` on the same (prompt, continuation) requests for the
teacher-forcing part, and Hugging Face ``generate`` (a greedy call and one with
``num_return_sequences=n, do_sample=True`` per batch of prompts) for the sampling part.

The split is measured by wrapping massshift's functions for the duration of the run (``Split``); the
wrappers time and count, and change no number.

    OMP_NUM_THREADS=1 python benchmarks/bench_real.py --facts 24 --country-facts 16 --n 8 --n 32
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import inspect
import math
import resource
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import torch

import massshift.lm.prompts as prompts_mod
import massshift.lm.sampling as sampling_mod
import massshift.score.table as table_mod
from massshift.data.matching import MatchConfig
from massshift.lm.logprobs import ScoringConfig
from massshift.lm.prompts import PromptConfig, build_prompt, continuations, encode_prompt
from massshift.lm.sampling import GenerationConfig
from massshift.score import DEFAULT_DISTRACTORS
from massshift.score.distractors import draw_distractors
from massshift.score.table import ScoreConfig, score_facts

POPQA = Path(__file__).resolve().parents[2] / "shared" / "data" / "popqa" / "s_pop_100000_to_inf.parquet"


def matmul_peak(threads: int) -> float:
    """Best float32 FLOP/s of three matmuls on this thread count: a square one and two of the model's
    shapes (256 rows x 576 -> 1536, SmolLM2's MLP; 64 rows x 576 -> 49152, its output layer)."""
    torch.set_num_threads(threads)
    best = 0.0
    for m, k, n in ((1024, 1024, 1024), (256, 576, 1536), (64, 576, 49152)):
        a, b = torch.randn(m, k), torch.randn(k, n)
        for _ in range(3):
            a @ b
        reps = max(3, int(2e9 / (2 * m * k * n)))
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        best = max(best, 2 * m * k * n * reps / (time.perf_counter() - t0))
    return best


class Split:
    """Exclusive time per stage, the model's work and the tokens it needed, measured by wrapping
    massshift's functions and hooking the model's forward for the duration of a run.

    Stages nest (``score_items`` > the model's forward; ``generate`` > ``run_prompts`` > forward):
    each stage's time minus its children's goes to its own label, keyed also by the outermost stage
    around it (teacher forcing or decoding), and a forward pass is labelled by the stage that ran it.
    ``tokens`` counts the work a perfect implementation needs: each prompt once per stage, each
    teacher-forced token but a continuation's last once, each decoded token but a row's last once.
    """

    STAGES = {  # (module, attribute) -> stage
        (table_mod, "score_items"): "teacher forcing",
        (table_mod, "generate"): "decoding",
        (table_mod, "encode_facts"): "tokenising",
        (table_mod, "encode_prompt"): "tokenising",
        (sampling_mod, "run_prompts"): "prompt pass",
    }

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.seconds: Counter[tuple[str, str]] = Counter()  # (outermost stage, stage) -> exclusive seconds
        self.tokens: Counter[str] = Counter()  # tokens needed, per outermost stage (see the class docstring)
        self.positions: Counter[str] = Counter()  # positions through the model, padding included, per stage
        self.logits: Counter[str] = Counter()  # positions whose output-layer logits were computed, per stage
        self._stack: list[list[Any]] = []  # [stage, child seconds, start]

    def stage(self, name: str) -> float:
        """Seconds spent in ``name`` itself, its forward passes included."""
        return sum(t for (_, s), t in self.seconds.items() if s in (name, f"{name} (forward)"))

    def within(self, outer: str) -> float:
        """Seconds spent inside the outermost stage ``outer``."""
        return sum(t for (o, _), t in self.seconds.items() if o == outer)

    def _enter(self, label: str) -> None:
        self._stack.append([label, 0.0, time.perf_counter()])

    def _leave(self) -> None:
        label, child, t0 = self._stack.pop()
        dt = time.perf_counter() - t0
        self.seconds[(self._stack[0][0] if self._stack else label, label)] += dt - child
        if self._stack:
            self._stack[-1][1] += dt

    def _timed(self, label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def inner(*args: Any, **kwargs: Any) -> Any:
            self._enter(label)
            try:
                out = fn(*args, **kwargs)
            finally:
                self._leave()
            if fn.__name__ == "score_items":  # items: (prompt ids, [continuation ids])
                self.tokens[label] += sum(len(p) + sum(len(c) - 1 for c in cs) for p, cs in args[1])
            elif fn.__name__ == "generate":  # prompts, then Generations with each row's ids
                self.tokens[label] += sum(map(len, args[1])) + sum(
                    len(ids) - 1 for g in out for ids in [g.greedy_ids, *g.sample_ids] if ids)
            return out
        return inner

    def _pre_forward(self, module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        stage = self._stack[-1][0] if self._stack else "other"
        ids = kwargs.get("input_ids", args[0] if args else None)
        self.positions[stage] += ids.numel()
        self._enter(f"{stage} (forward)")

    def _post_forward(self, module: Any, args: Any, kwargs: dict[str, Any], out: Any) -> None:
        self._leave()
        stage = self._stack[-1][0] if self._stack else "other"
        self.logits[stage] += out.logits.shape[:-1].numel()

    @contextlib.contextmanager
    def patched(self) -> Iterator[Split]:
        saved = [(mod, name, getattr(mod, name)) for mod, name in self.STAGES]
        hooks = [self.model.register_forward_pre_hook(self._pre_forward, with_kwargs=True),
                 self.model.register_forward_hook(self._post_forward, with_kwargs=True)]
        try:
            for (mod, name), label in self.STAGES.items():
                setattr(mod, name, self._timed(label, getattr(mod, name)))
            yield self
        finally:
            for mod, name, fn in saved:
                setattr(mod, name, fn)
            for h in hooks:
                h.remove()


def workloads(args: argparse.Namespace) -> list[tuple[str, pd.DataFrame, PromptConfig]]:
    from massshift.data.countries import country_facts
    from massshift.data.facts import load_facts
    from massshift.studies.countries import INSTRUCTION, SYSTEM

    out = []
    if args.facts:
        popqa = load_facts(args.popqa)
        popqa = popqa[popqa["answers"].map(len) >= args.min_aliases]
        out.append(("popqa", popqa.sample(min(args.facts, len(popqa)), random_state=args.seed), PromptConfig()))
    if args.country_facts:
        countries = country_facts()
        out.append(("countries", countries.sample(min(args.country_facts, len(countries)), random_state=args.seed),
                    PromptConfig(chat=True, system=SYSTEM, instruction=INSTRUCTION)))
    return out


def score_config(prompt: PromptConfig, n: int, args: argparse.Namespace) -> ScoreConfig:
    return ScoreConfig(prompt=prompt, match=MatchConfig(mode="contains"),
                       generation=GenerationConfig(n_samples=n, max_new_tokens=args.max_new_tokens, seed=args.seed),
                       scoring=ScoringConfig(), chunk_size=args.chunk_size, distractors=DEFAULT_DISTRACTORS)


def lmeval_teacher_forcing(model: Any, tok: Any, facts: pd.DataFrame, cfg: ScoreConfig, batch_size: int
                           ) -> tuple[float, list[list[float]]]:
    """lm-eval's loglikelihood over every (prompt, alias or distractor) request of ``facts``; returns the
    time and each fact's log-probs (aliases, then distractors: massshift's row order)."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    drawn = draw_distractors(facts, cfg.distractors, cfg.generation.seed)
    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=batch_size, device="cpu", dtype="float32",
              logits_cache=False)
    reqs, owner = [], []
    for f, (q, answers, dis) in enumerate(zip(facts["question"], facts["answers"], drawn)):
        prompt = build_prompt(q, cfg.prompt, tok)
        for a in list(answers) + list(dis):
            for cont in _continuations(a, cfg.prompt, tok):
                reqs.append(Instance("loglikelihood", {}, (prompt, cont), len(reqs)))
                owner.append(f)
    t0 = time.perf_counter()
    res = lm.loglikelihood(reqs, disable_tqdm=True)
    seconds = time.perf_counter() - t0
    per_fact: list[list[float]] = [[] for _ in range(len(facts))]
    for f, (lp, _) in zip(owner, res):
        per_fact[f].append(lp)
    return seconds, per_fact


def _continuations(answer: str, prompt: PromptConfig, tok: Any) -> list[str]:
    """massshift's scored continuations of ``answer``, one per end (the chat turn's ends need the tokenizer)."""
    if "tokenizer" in inspect.signature(continuations).parameters:
        return continuations(answer, prompt, tok)
    return continuations(answer, prompt)


def _logsumexp(xs: list[float]) -> float:
    m = max(xs)
    return m if m == -math.inf else m + math.log(sum(math.exp(x - m) for x in xs))


def agreement(table: pd.DataFrame, facts: pd.DataFrame, theirs: list[list[float]]) -> float:
    """Largest |difference| between the table's logp_gold and distractor log-probs and lm-eval's (each
    answer's ends pooled by log-sum-exp, as the table pools them)."""
    worst = 0.0
    for row, answers, lps in zip(table.itertuples(), facts["answers"], theirs):
        ends = len(lps) // (len(answers) + len(row.distractor_logps))
        k = len(answers) * ends
        worst = max(worst, abs(row.logp_gold - _logsumexp(lps[:k])))
        folded = [_logsumexp(lps[j: j + ends]) for j in range(k, len(lps), ends)]
        worst = max([worst] + [abs(a - b) for a, b in zip(row.distractor_logps, folded)])
    return worst


@torch.inference_mode()
def hf_sampling(model: Any, tok: Any, prompts: list[list[int]], n: int, max_new_tokens: int, max_rows: int,
                stops: tuple[str, ...]) -> tuple[float, int]:
    """Hugging Face ``generate`` for a greedy answer and n samples per prompt, batches of prompts
    left-padded as massshift batches them (``max_rows`` // (1 + n) prompts); returns time and the
    generated tokens (up to and with the stop token)."""
    from massshift.lm.logprobs import pad_batch

    per_batch = max(1, max_rows // (n + 1))
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    made = 0
    t0 = time.perf_counter()
    for s in range(0, len(order), per_batch):
        ids, mask = pad_batch([prompts[i] for i in order[s: s + per_batch]], tok.pad_token_id, "left")
        common = dict(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, stop_strings=list(stops),
                      tokenizer=tok, pad_token_id=tok.pad_token_id)
        for extra in (dict(do_sample=False), dict(do_sample=True, top_k=0, temperature=1.0, num_return_sequences=n)):
            out = model.generate(**common, **extra)
            made += int((out[:, ids.shape[1]:] != tok.pad_token_id).sum())
    return time.perf_counter() - t0, made


def report(name: str, n: int, n_facts: int, seconds: float, split: Split, n_params: int, peak: float) -> None:
    tokens = sum(split.tokens.values())
    flops = 2 * n_params * tokens / seconds
    print(f"\n== {name}, n={n}: {n_facts} facts in {seconds:.1f} s = {n_facts / seconds:.3f} facts/s "
          f"({seconds / n_facts:.2f} s/fact); float32 matmul peak just before: {peak / 1e9:.1f} GFLOP/s")
    print(f"  tokens {tokens} ({tokens / n_facts:.0f}/fact; positions run {sum(split.positions.values())}, "
          f"logit rows {sum(split.logits.values())}) -> {flops / 1e9:.1f} GFLOP/s = {flops / peak:.0%} of peak; "
          f"roofline {n_facts * peak / (2 * n_params * tokens):.3f} facts/s")
    parts = {s: split.stage(s) for s in ("prompt pass", "teacher forcing", "decoding", "tokenising")}
    parts["bookkeeping"] = seconds - sum(parts.values())
    for s, t in parts.items():
        fwd = sum(v for (_, lab), v in split.seconds.items() if lab == f"{s} (forward)")
        work = f", {split.tokens[s]} tokens needed" if split.tokens[s] else ""
        extra = (f" (forward {fwd:.1f} s: {split.positions[s]} positions, {split.logits[s]} logit rows{work})"
                 if fwd else "")
        print(f"  {s:16s} {t:7.1f} s {t / seconds:5.0%}{extra}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--facts", type=int, default=24, help="PopQA facts (0: skip the workload)")
    ap.add_argument("--country-facts", type=int, default=16, help="country facts (0: skip the workload)")
    ap.add_argument("--popqa", type=Path, default=POPQA)
    ap.add_argument("--min-aliases", type=int, default=1, help="PopQA facts with at least this many aliases only")
    ap.add_argument("--n", type=int, action="append", help="samples per fact (repeatable; default 8 and 32)")
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--chunk-size", type=int, default=64)
    ap.add_argument("--lmeval-batch", type=int, default=32, help="lm-eval's batch size (requests)")
    ap.add_argument("--no-anchors", action="store_true", help="time massshift only")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ns = args.n or [8, 32]
    from massshift.lm.loading import load_model

    model, tok, _ = load_model(args.model)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{args.model}: {n_params / 1e6:.1f}M parameters; {args.threads} thread(s); torch {torch.__version__}; "
          f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
    for name, facts, prompt in workloads(args):
        n_alias = facts["answers"].map(len)
        print(f"\n# {name}: {len(facts)} facts, aliases mean {n_alias.mean():.1f} max {n_alias.max()}, "
              f"{DEFAULT_DISTRACTORS} distractors, chat={prompt.chat}")
        tf_seconds = None
        for n in ns:
            cfg = score_config(prompt, n, args)
            score_facts(model, tok, facts.head(2), cfg)  # warm-up (stop masks, allocator)
            peak = matmul_peak(args.threads)  # just before the run: other work on the machine moves it
            split = Split(model)
            with split.patched():
                t0 = time.perf_counter()
                table = score_facts(model, tok, facts, cfg)
                seconds = time.perf_counter() - t0
            report(name, n, len(facts), seconds, split, n_params, peak)
            print(f"  peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB; "
                  f"greedy accuracy {table['greedy_correct'].mean():.0%}")
            ours_tf, ours_gen = split.within("teacher forcing"), split.within("decoding")
            if args.no_anchors:
                continue
            if tf_seconds is None:
                tf_seconds, theirs = lmeval_teacher_forcing(model, tok, facts, cfg, args.lmeval_batch)
                diff = agreement(table, facts, theirs)
            print(f"  teacher forcing: massshift {ours_tf:.1f} s, lm-eval loglikelihood {tf_seconds:.1f} s"
                  f" -> {tf_seconds / ours_tf:.2f}x lm-eval (max |logp diff| {diff:.1e})")
            prompts = [encode_prompt(tok, build_prompt(q, cfg.prompt, tok), cfg.prompt) for q in facts["question"]]
            stop_texts = getattr(prompts_mod, "stop_texts", None)  # the chat turn's end marker stops too
            stops = stop_texts(cfg.prompt, tok) if stop_texts else (cfg.prompt.terminator,)
            hf_s, made = hf_sampling(model, tok, prompts, n, args.max_new_tokens, cfg.generation.max_rows, stops)
            print(f"  sampling: massshift {ours_gen:.1f} s, HF generate {hf_s:.1f} s ({made} tokens)"
                  f" -> {hf_s / ours_gen:.2f}x HF generate")


if __name__ == "__main__":
    main()
