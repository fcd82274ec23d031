"""Data attribution: bucket rules, the run plan, seed intervals, zero-signal counts, TracIn scores, the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import FACTS
from massshift.studies.attribution import (
    BucketBounds,
    assign_buckets,
    bucket_sizes,
    gain_table,
    loo_table,
    plan_runs,
    seed_interval,
)

# --- buckets -----------------------------------------------------------------------------------

def test_assign_buckets_hand_made_rows():
    rows = pd.DataFrame([
        # n_correct, n_samples, greedy_correct, expected
        (0, 128, False, "inaccessible"),
        (1, 128, False, "rare"),           # 0.8%
        (12, 128, False, "rare"),          # 9.4%
        (13, 128, False, "medium"),        # 10.2%
        (64, 128, False, "medium"),        # exactly 50%
        (65, 128, False, "frequent"),      # 50.8%
        (128, 128, False, "frequent"),     # every sample right, greedy wrong
        (0, 128, True, "greedy-correct"),  # greedy wins over the samples
        (100, 128, True, "greedy-correct"),
        (1, 10, False, "rare"),            # exactly 10%
        (2, 10, False, "medium"),
    ], columns=["n_correct", "n_samples", "greedy_correct", "expected"])
    assert list(assign_buckets(rows)) == list(rows["expected"])
    tight = assign_buckets(rows, BucketBounds(rare_max=0.05, medium_max=0.9))
    assert list(tight[:7]) == ["inaccessible", "rare", "medium", "medium", "medium", "medium", "frequent"]


def test_assign_buckets_errors():
    with pytest.raises(ValueError, match="n_correct"):
        assign_buckets(pd.DataFrame({"n_samples": [4], "greedy_correct": [False]}))
    with pytest.raises(ValueError, match="needs samples"):
        assign_buckets(pd.DataFrame({"n_correct": [0], "n_samples": [0], "greedy_correct": [False]}))
    with pytest.raises(ValueError, match=r"\[0, n_samples\]"):
        assign_buckets(pd.DataFrame({"n_correct": [5], "n_samples": [4], "greedy_correct": [False]}))
    with pytest.raises(ValueError, match="rare_max < medium_max"):
        BucketBounds(rare_max=0.5, medium_max=0.2)


def test_bucket_sizes_cover_every_bucket_and_sum_up():
    sizes = bucket_sizes(pd.Series(["rare", "rare", "greedy-correct", "inaccessible"]))
    assert list(sizes["bucket"]) == ["inaccessible", "rare", "medium", "frequent", "greedy-correct"]
    assert list(sizes["n"]) == [1, 2, 0, 0, 1]
    assert sizes["share"].sum() == pytest.approx(1.0)


# --- the plan ----------------------------------------------------------------------------------

def _buckets() -> pd.DataFrame:
    labels = ["inaccessible"] * 30 + ["rare"] * 12 + ["medium"] * 20 + ["frequent"] * 3 + ["greedy-correct"] * 25
    return pd.DataFrame({"fact_id": [f"f{i:03d}" for i in range(len(labels))], "bucket": labels})


def test_plan_runs_equal_samples_mixed_and_leave_one_out():
    b = _buckets()
    specs, plan = plan_runs(b, sample_size=16, seeds=(0, 1), min_bucket=10)
    assert plan["used_buckets"] == ["inaccessible", "rare", "medium", "greedy-correct"]
    assert plan["skipped_buckets"] == {"frequent": 3}
    assert plan["per_bucket"] == 12  # capped at the smallest usable bucket
    assert len(specs) == 2 * (4 + 1 + 4)
    of = dict(zip(b["fact_id"], b["bucket"]))
    s0 = {s.name: s for s in specs if s.seed == 0}
    for bucket in plan["used_buckets"]:
        ids = s0[f"bucket-{bucket}-s0"].fact_ids
        assert len(ids) == 12 == len(set(ids)) and {of[i] for i in ids} == {bucket}
        loo = set(s0[f"loo-{bucket}-s0"].fact_ids)
        assert loo == set(s0["mixed-s0"].fact_ids) - set(ids) and len(loo) == 36
    assert len(s0["mixed-s0"].fact_ids) == 48
    again, _ = plan_runs(b, sample_size=16, seeds=(0, 1), min_bucket=10)
    assert [s.fact_ids for s in again] == [s.fact_ids for s in specs]  # seeded
    s1 = {s.name: s for s in specs if s.seed == 1}
    assert s1["bucket-inaccessible-s1"].fact_ids != s0["bucket-inaccessible-s0"].fact_ids
    with pytest.raises(ValueError, match="no bucket"):
        plan_runs(b, sample_size=16, seeds=(0,), min_bucket=100)


# --- tables ------------------------------------------------------------------------------------

def test_seed_interval_is_the_t_interval():
    m, lo, hi = seed_interval([0.1, 0.2, 0.3])
    half = 4.302652729911275 * 0.1 / math.sqrt(3)  # t(0.975, 2) * sd / sqrt(n)
    assert m == pytest.approx(0.2) and lo == pytest.approx(0.2 - half) and hi == pytest.approx(0.2 + half)
    assert seed_interval([0.5])[0] == 0.5 and math.isnan(seed_interval([0.5])[1])


def test_gain_and_loo_tables_by_hand():
    runs = pd.DataFrame([
        ("bucket", "rare", 0, 0.10), ("bucket", "rare", 1, 0.20),
        ("mixed", None, 0, 0.30), ("mixed", None, 1, 0.40),
        ("loo", "rare", 0, 0.25), ("loo", "rare", 1, 0.25),
        ("loo", "medium", 0, 0.30), ("loo", "medium", 1, 0.20),
    ], columns=["kind", "bucket", "seed", "gain"])
    g = gain_table(runs).set_index(["kind", "bucket"])
    assert g.loc[("bucket", "rare"), "gain"] == pytest.approx(0.15)
    assert g.loc[("mixed", "all"), "gain"] == pytest.approx(0.35)
    assert g.loc[("bucket", "rare"), "n_seeds"] == 2
    loo = loo_table(runs).set_index("bucket")
    assert loo.loc["rare", "drop"] == pytest.approx(0.10)  # (0.05 + 0.15) / 2
    assert loo.loc["medium", "drop"] == pytest.approx(0.10)  # (0.0 + 0.2) / 2
    assert loo.loc["rare", "share"] == pytest.approx(0.10 / 0.35)


def test_zero_signal_counts_split_by_bucket_and_half():
    from massshift.studies.attribution_runs import _zero_signal_counts
    from massshift.train.common import batch_indices
    from massshift.train.grpo import GRPOConfig

    train = pd.DataFrame({"fact_id": ["a", "b", "c", "d"]})
    of = {"a": "rare", "b": "rare", "c": "inaccessible", "d": "medium"}
    cfg = GRPOConfig(steps=4, batch_size=2, seed=3)
    log = pd.DataFrame([{"step": 0, "eval_accuracy": 0.1}] + [
        {"step": s + 1, "reward_mean": 0.5, "zero_var_fact_ids": ["c"] if s < 2 else ["c", "a"],
         "zero_var_rewards": [0.0] if s < 2 else [0.0, 1.0]} for s in range(4)])
    out = {(r["bucket"], r["phase"]): (r["groups"], r["zero"], r["zero_right"])
           for r in _zero_signal_counts(log, train, of, cfg)}
    expected: dict = {}
    for s in range(4):
        phase = "first half" if s < 2 else "second half"
        for i in batch_indices(4, 2, 3, s):
            fid = train["fact_id"][i]
            g, z, right = expected.get((of[fid], phase), (0, 0, 0))
            solved = fid == "a" and s >= 2  # all right: zero variance, reward 1
            expected[(of[fid], phase)] = (g + 1, z + (fid == "c" or solved), right + solved)
    assert out == expected
    assert sum(g for g, _, _ in out.values()) == 8
    old_log = log.drop(columns=["zero_var_rewards"])  # logs written before zero_var_rewards existed
    assert all(r["zero_right"] is None for r in _zero_signal_counts(old_log, train, of, cfg))


# --- TracIn ------------------------------------------------------------------------------------

def _length_parity(text: str, answers: list[str]) -> float:
    return float(len(text) % 2)


def test_count_sketch_is_seeded_and_unbiased():
    from massshift.studies.tracin import CountSketch

    shapes = [("w", 50), ("b", 7)]
    g = {"w": torch.randn(50, generator=torch.Generator().manual_seed(1)), "b": torch.arange(7.0)}
    h = {"w": torch.randn(50, generator=torch.Generator().manual_seed(2)), "b": torch.ones(7)}
    p1, p2 = CountSketch(shapes, 16, seed=5).project(g), CountSketch(shapes, 16, seed=5).project(g)
    assert torch.equal(p1, p2)
    assert not torch.equal(p1, CountSketch(shapes, 16, seed=6).project(g))
    unit = CountSketch([("w", 3)], 8, seed=0).project({"w": torch.tensor([0.0, 1.0, 0.0])})
    assert (unit != 0).sum() == 1 and unit.abs().sum() == 1  # one bin, sign +-1
    exact = float(sum((g[k] * h[k]).sum() for k in g))
    est = np.mean([float(CountSketch(shapes, 16, seed=s).project(g) @ CountSketch(shapes, 16, seed=s).project(h))
                   for s in range(400)])
    norm = float(torch.sqrt(sum((v ** 2).sum() for v in g.values())) * torch.sqrt(sum((v ** 2).sum() for v in h.values())))
    assert abs(est - exact) < 0.1 * norm  # unbiased: the mean over seeds is near the exact inner product


def test_select_params_last_layers(tiny_model):
    from massshift.studies.tracin import select_params

    names = [n for n, _ in select_params(tiny_model, "last:1")]
    assert names and all(".layers.0." not in n for n in names) and any(".layers.1." in n for n in names)
    assert "lm_head.weight" in names and not any("embed" in n for n in names)
    assert len(select_params(tiny_model, "all")) == len(list(tiny_model.parameters()))
    with pytest.raises(ValueError, match="last:N"):
        from massshift.studies.tracin import TracInConfig

        TracInConfig(params="top")


def test_tracin_score_equals_a_gradient_computed_directly(tiny_model, tokenizer):
    """The score is <grad of the GRPO objective on the fact's group, grad of held-out sum log p(gold)>."""
    from massshift.lm.prompts import PromptConfig, encode_facts
    from massshift.studies.tracin import CountSketch, TracInConfig, tracin_scores
    from massshift.train.common import prompt_ids_for
    from massshift.train.grpo import GRPOConfig, group_advantages, rewards, rollout

    model = tiny_model
    facts = pd.DataFrame([{"fact_id": str(i), **f} for i, f in enumerate(FACTS)])
    train, test = facts.iloc[:3].reset_index(drop=True), facts.iloc[3:6].reset_index(drop=True)
    grpo = GRPOConfig(num_generations=4, max_new_tokens=6)
    cfg = TracInConfig(dim=64, seed=7, chunk=2)
    res = tracin_scores(model, tokenizer, train, test, grpo, cfg, reward_fn=_length_parity)
    assert list(res.scores["fact_id"]) == ["0", "1", "2"]
    assert all(p.grad is None for p in model.parameters())

    params = list(model.parameters())

    def flat_grad(value: torch.Tensor) -> torch.Tensor:
        grads = torch.autograd.grad(value, params, allow_unused=True)
        return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)])

    # held-out: plain forward per alias, log-sum-exp over aliases, summed over facts
    prompt = PromptConfig()
    total = torch.zeros(())
    for p_ids, conts in encode_facts(tokenizer, list(test["question"]), list(test["answers"]), prompt):
        per_alias = []
        for c in conts:
            logits = model(torch.tensor([p_ids + c])).logits[0]
            lp = torch.log_softmax(logits, -1)[len(p_ids) - 1: len(p_ids) + len(c) - 1]
            per_alias.append(lp.gather(-1, torch.tensor(c)[:, None]).sum())
        total = total + torch.logsumexp(torch.stack(per_alias), 0)
    g_test = flat_grad(total)

    prompts = prompt_ids_for(tokenizer, list(train["question"]), prompt)
    sampler = GRPOConfig(num_generations=4, max_new_tokens=6, seed=7)
    with torch.no_grad():
        ro = rollout(model, tokenizer, prompts, list(train["fact_id"]), list(train["answers"]), sampler, 0)
    adv = group_advantages(rewards(ro, reward_fn=_length_parity))
    nonzero = 0
    for k in range(3):
        comps = ro.completion_ids[4 * k: 4 * k + 4]
        n_tok = sum(len(c) for c in comps)
        obj = torch.zeros(())
        for a, c in zip(adv[k], comps):
            logits = model(torch.tensor([prompts[k] + c])).logits[0]
            lp = torch.log_softmax(logits, -1)[len(prompts[k]) - 1: len(prompts[k]) + len(c) - 1]
            obj = obj + a * lp.gather(-1, torch.tensor(c)[:, None]).sum()
        obj = obj / n_tok
        row = res.scores.iloc[k]
        if bool((adv[k] == 0).all()):
            assert row["zero_signal"] and row["score"] == 0.0
            continue
        nonzero += 1
        g_i = flat_grad(obj)
        assert row["score"] == pytest.approx(float(g_i.double() @ g_test.double()), rel=1e-4, abs=1e-7)
        # the projected score is the same sketch applied to both gradients
        shapes = [(n, p.numel()) for n, p in model.named_parameters()]
        sk = CountSketch(shapes, 64, seed=7)
        split = dict(zip([n for n, _ in model.named_parameters()], torch.split(g_i, [s for _, s in shapes])))
        split_t = dict(zip(split, torch.split(g_test, [s for _, s in shapes])))
        assert row["score_proj"] == pytest.approx(float(sk.project(split) @ sk.project(split_t)), rel=1e-4)
    assert nonzero >= 1  # the parity reward gives the untrained model's groups variance
    assert res.train_proj.shape == (3, 64)
    again = tracin_scores(model, tokenizer, train, test, grpo, cfg, reward_fn=_length_parity)
    pd.testing.assert_frame_equal(again.scores, res.scores)  # seeded groups and projection


def test_config_errors():
    from massshift.studies.attribution_runs import AttributionConfig

    with pytest.raises(ValueError, match="seeds"):
        AttributionConfig(seeds=(0, 0))
    with pytest.raises(ValueError, match="tracin_checkpoints"):
        AttributionConfig(tracin_checkpoints=("final",))


# --- end to end --------------------------------------------------------------------------------

@pytest.mark.slow
def test_quick_attribution_end_to_end(tmp_path):
    """``massshift attribute --quick`` on a quickly pretrained synthetic world: files, sums, resume."""
    import dataclasses
    import time

    from typer.testing import CliRunner

    from massshift.cli import app
    from massshift.data.facts import load_facts
    from massshift.data.split import split_facts, write_split
    from massshift.studies.demo import _pretrain_config, _world_config
    from massshift.synthetic.pretrain import pretrain
    from massshift.synthetic.world import build_world, write_world

    write_world(build_world(_world_config(True)), tmp_path / "world")
    pretrain(tmp_path / "world", tmp_path / "base", dataclasses.replace(_pretrain_config(True), threads=1))
    write_split(split_facts(load_facts(tmp_path / "world" / "facts.jsonl"), test_size=0.5, seed=0,
                            group_by="subject"), tmp_path / "split", {})
    out = tmp_path / "attr"
    args = ["attribute", str(tmp_path / "base"), "--train", str(tmp_path / "split" / "train.jsonl"),
            "--test", str(tmp_path / "split" / "test.jsonl"), "--out", str(out), "--quick", "--threads", "1",
            "--no-progress"]
    t0 = time.perf_counter()
    res = CliRunner().invoke(app, args)
    first = time.perf_counter() - t0
    assert res.exit_code == 0, res.output
    for name in ("report.md", "summary.json", "buckets.csv", "runs.csv", "gains.csv", "loo.csv", "zero_signal.csv",
                 "transitions.csv", "tracin.parquet", "tracin_buckets.csv", "figures/attribution.png"):
        assert (out / name).exists(), name
    summary = json.loads((out / "summary.json").read_text())
    n_train = len(load_facts(tmp_path / "split" / "train.jsonl"))
    assert sum(summary["bucket_sizes"].values()) == n_train == summary["n_train"]
    runs = pd.read_csv(out / "runs.csv")
    used = summary["used_buckets"]
    assert len(runs) == len(summary["seeds"]) * (2 * len(used) + 1)
    assert np.allclose(runs["gain"], runs["acc"] - runs["acc_base"])
    assert (runs.loc[runs["kind"] == "bucket", "n_train"] == summary["per_bucket"]).all()
    trans = pd.read_csv(out / "transitions.csv")
    assert (trans.groupby("run")["count"].sum() == summary["n_test"]).all()
    gains = pd.read_csv(out / "gains.csv")
    for _, row in gains[gains["kind"] == "bucket"].iterrows():
        assert row["gain"] == pytest.approx(runs[(runs["kind"] == "bucket") & (runs["bucket"] == row["bucket"])]["gain"].mean())
    zero = pd.read_csv(out / "zero_signal.csv")
    assert set(zero["bucket"]) <= set(used) and ((zero["zero"] >= 0) & (zero["zero"] <= zero["groups"])).all()
    tracin = pd.read_parquet(out / "tracin.parquet")
    assert (tracin.loc[tracin["zero_signal"], "score_total"] == 0).all()
    # a rerun trains nothing and gives the same numbers
    t0 = time.perf_counter()
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert time.perf_counter() - t0 < first
    pd.testing.assert_frame_equal(pd.read_csv(out / "runs.csv"), runs)


def test_score_config_carries_the_prompt_and_the_training_matcher():
    from massshift.lm.prompts import PromptConfig
    from massshift.studies.attribution_runs import AttributionConfig, _score_config
    from massshift.train.grpo import GRPOConfig

    cfg = AttributionConfig(prompt=PromptConfig(chat=True, instruction="Answer briefly."),
                            grpo=GRPOConfig(match_mode="contains", max_words=5, max_new_tokens=7, temperature=0.7))
    sc = _score_config(cfg, 5)
    assert sc.prompt == cfg.prompt and sc.match.mode == "contains" and sc.match.max_words == 5
    assert (sc.generation.n_samples, sc.generation.max_new_tokens, sc.generation.temperature) == (5, 7, 0.7)
