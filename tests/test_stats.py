"""Statistics: pass@k against brute force, McNemar against scipy, and every summary number
recomputed from the merged table with plain Python loops."""

from __future__ import annotations

import itertools
import json
import math
import statistics
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from _score_tables import make_pair
from scipy.stats import binomtest

from massshift.analysis.estimators import (
    StatsConfig,
    crossing_k,
    default_ks,
    pass_at_k,
    pass_at_k_curve,
    support_counts,
)
from massshift.analysis.states import StateConfig, add_state_columns
from massshift.analysis.statistics import sensitivity, summarise
from massshift.analysis.transitions import merge_models
from massshift.score.schema import STATES, ScoreTableError

EPS = -math.log(0.05) / 128
N_BOOT = 200


def merged_pair(n: int = 200, seed: int = 0, n_samples: int = 16):
    base, (rl,) = make_pair(n=n, seed=seed, n_samples=n_samples)
    return merge_models(add_state_columns(base), add_state_columns(rl))


@pytest.fixture(scope="module")
def merged():
    return merged_pair()


@pytest.fixture(scope="module")
def summary(merged):
    return summarise(merged, StateConfig(), StatsConfig(n_boot=N_BOOT, seed=0))


def plain_state(row: dict, m: str, criterion: str) -> str:
    if row[f"greedy_correct_{m}"]:
        return "greedy-correct"
    lp = row[f"logp_gold_{m}"]
    tail = (math.isfinite(lp) and lp >= math.log(EPS)) if criterion == "logprob" else row[f"n_correct_{m}"] >= 1
    return "tail-correct" if tail else "absent"


# ----------------------------------------------------------------------------- pass@k

def brute_pass_at_k(n: int, c: int, k: int) -> float:
    outcomes = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(outcomes[i] for i in s) for s in subsets) / len(subsets)


def test_pass_at_k_equals_enumeration_over_subsets():
    for n in range(1, 8):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(brute_pass_at_k(n, c, k), abs=1e-12), (n, c, k)


def test_pass_at_k_is_vectorised_stable_and_checked():
    n, c = np.array([10, 10, 16, 128]), np.array([0, 3, 16, 5])
    got = pass_at_k(n, c, 4)
    assert got.shape == (4,)
    for i in range(4):
        exact = 1 - math.comb(int(n[i] - c[i]), 4) / math.comb(int(n[i]), 4)
        assert got[i] == pytest.approx(exact, abs=1e-12)
    assert pass_at_k(1024, 1, 512) == pytest.approx(0.5, abs=1e-12)  # C(1023,512)/C(1024,512) = 1/2
    assert pass_at_k(5000, 2, 2500) == pytest.approx(1 - (2500 * 2499) / (5000 * 4999), abs=1e-12)
    with pytest.raises(ValueError, match="k <= n"):
        pass_at_k(4, 1, 5)
    with pytest.raises(ValueError, match="0 <= c <= n"):
        pass_at_k(4, 5, 2)


def test_pass_at_k_curve_and_crossing(merged):
    assert default_ks(16) == [1, 2, 4, 8, 16] and default_ks(12) == [1, 2, 4, 8, 12] and default_ks(1) == [1]
    curve = pass_at_k_curve(merged, suffix="_base")
    rows = merged.to_dict("records")
    for k, value in zip(curve["k"], curve["pass_at_k"]):
        plain = [1 - math.comb(r["n_samples_base"] - r["n_correct_base"], k) / math.comb(r["n_samples_base"], k)
                 for r in rows]
        assert value == pytest.approx(sum(plain) / len(plain), abs=1e-12)
    base = pd.DataFrame({"k": [1, 2, 4, 8], "pass_at_k": [0.3, 0.5, 0.7, 0.9]})
    rl = pd.DataFrame({"k": [1, 2, 4, 8], "pass_at_k": [0.4, 0.55, 0.7, 0.8]})
    assert crossing_k(base, rl) == 4
    assert crossing_k(rl, base) is None  # base ahead at k=1: no crossing
    assert crossing_k(base, rl.assign(pass_at_k=[0.4, 0.6, 0.8, 0.95])) is None


# ----------------------------------------------------------------------------- McNemar and support

def test_mcnemar_matches_scipy_on_hand_counted_pairs(summary, merged):
    b = c = 0
    for row in merged.to_dict("records"):
        if row["greedy_correct_base"] and not row["greedy_correct_rl"]:
            b += 1
        elif row["greedy_correct_rl"] and not row["greedy_correct_base"]:
            c += 1
    mc = summary["mcnemar"]
    assert (mc["b"], mc["c"], mc["n_discordant"]) == (b, c, b + c)
    assert mc["p_value"] == pytest.approx(binomtest(c, b + c, 0.5).pvalue, rel=1e-12)


def test_support_counts_by_hand():
    got = support_counts([True, True, False, False, True], [True, False, True, False, True])
    assert (got["P"], got["S"], got["E"], got["O"]) == (2, 1, 1, 1)
    assert got["SRR"] == pytest.approx(2 / 3) and got["NDR"] == pytest.approx(1 / 3)
    assert got["SDS"] == pytest.approx(4 / 9) and got["NSCR"] == 0.0
    empty = support_counts([False, False], [False, False])
    assert empty["O"] == 2 and empty["SRR"] is None and empty["NDR"] is None and empty["NSCR"] is None


# ----------------------------------------------------------------------------- the summary, recomputed

def test_summary_numbers_recomputed_by_hand(summary, merged):
    rows = merged.to_dict("records")
    n = len(rows)
    assert summary["n_facts"] == n == 200
    acc = {m: sum(r[f"greedy_correct_{m}"] for r in rows) / n for m in ("base", "rl")}
    assert summary["accuracy"]["base"]["value"] == pytest.approx(acc["base"])
    assert summary["accuracy"]["rl"]["value"] == pytest.approx(acc["rl"])
    assert summary["gain"]["absolute"]["value"] == pytest.approx(acc["rl"] - acc["base"])
    assert summary["gain"]["relative"]["value"] == pytest.approx(acc["rl"] / acc["base"] - 1)

    for crit in ("logprob", "sampling"):
        pairs = Counter((plain_state(r, "base", crit), plain_state(r, "rl", crit)) for r in rows)
        expected = {b: {s: pairs[(b, s)] for s in STATES} for b in STATES}
        assert summary["transitions_by_criterion"][crit] == expected
        new = [r for r in rows if not r["greedy_correct_base"] and r["greedy_correct_rl"]]
        tail = sum(plain_state(r, "base", crit) == "tail-correct" for r in new)
        red = summary["redistribution_by_criterion"][crit]
        assert (red["n_new_greedy"], red["from_tail"], red["from_absent"]) == (len(new), tail, len(new) - tail)
        assert red["share_tail"]["value"] == pytest.approx(tail / len(new))
    assert summary["transitions"] == summary["transitions_by_criterion"]["logprob"]
    assert summary["redistribution"]["from_tail"] == summary["redistribution_by_criterion"]["logprob"]["from_tail"]

    gained = [r for r in rows if not r["greedy_correct_base"] and r["greedy_correct_rl"]]
    lost = [r for r in rows if r["greedy_correct_base"] and not r["greedy_correct_rl"]]
    ch = summary["churn"]
    assert (ch["gained"]["value"], ch["lost"]["value"], ch["net"]["value"]) == (
        len(gained), len(lost), len(gained) - len(lost))
    assert ch["lost_to"] == {s: sum(plain_state(r, "rl", "logprob") == s for r in lost) for s in STATES[1:]}
    assert ch["gained_from"] == {s: sum(plain_state(r, "base", "logprob") == s for r in gained) for s in STATES[1:]}

    nonfinite = {m: sum(not math.isfinite(r[f"logp_gold_{m}"]) for r in rows) for m in ("base", "rl")}
    assert summary["n_nonfinite_logp"] == nonfinite == {"base": 2, "rl": 3}
    for state in (*STATES, "all"):
        in_state = [r for r in rows if state == "all" or plain_state(r, "base", "logprob") == state]
        ok = [r for r in in_state if math.isfinite(r["logp_gold_base"]) and math.isfinite(r["logp_gold_rl"])]
        got = summary["logp_shift"][state]
        assert got["n"] == len(ok) and got["n_nonfinite"] == len(in_state) - len(ok)
        if ok:
            med = statistics.median(r["logp_gold_rl"] - r["logp_gold_base"] for r in ok)
            assert got["median"]["value"] == pytest.approx(med, abs=1e-12)
    assert summary["logp_shift"]["all"]["n"] + summary["logp_shift"]["all"]["n_nonfinite"] == n


def test_entropy_support_agreement_slick_recomputed(summary, merged):
    rows = merged.to_dict("records")
    for m in ("base", "rl"):
        mean = statistics.fmean(r[f"answer_entropy_{m}"] for r in rows)
        assert summary["entropy"][m]["value"] == pytest.approx(mean, abs=1e-12)
        agree = statistics.fmean(plain_state(r, m, "logprob") == plain_state(r, m, "sampling") for r in rows)
        assert summary["agreement"][m] == pytest.approx(agree)
        slick = Counter()
        for r in rows:
            some, every = r[f"n_correct_{m}"] >= 1, r[f"n_correct_{m}"] == r[f"n_samples_{m}"]
            slick[("HighlyKnown" if every else "MaybeKnown") if r[f"greedy_correct_{m}"]
                  else ("WeaklyKnown" if some else "Unknown")] += 1
        assert summary["slick"][m] == {k: slick[k] for k in ("HighlyKnown", "MaybeKnown", "WeaklyKnown", "Unknown")}
    change = statistics.fmean(r["answer_entropy_rl"] - r["answer_entropy_base"] for r in rows)
    assert summary["entropy"]["change"]["value"] == pytest.approx(change, abs=1e-12)

    def supp(r, m, crit):
        lp = r[f"logp_gold_{m}"]
        return (math.isfinite(lp) and math.exp(lp) > EPS) if crit == "logprob" else r[f"n_correct_{m}"] >= 1

    for crit in ("logprob", "sampling"):
        cnt = Counter((supp(r, "base", crit), supp(r, "rl", crit)) for r in rows)
        p, s, e, o = cnt[(True, True)], cnt[(True, False)], cnt[(False, True)], cnt[(False, False)]
        got = summary["support"][crit]
        assert (got["P"], got["S"], got["E"], got["O"]) == (p, s, e, o)
        srr, ndr = p / (p + s), e / (p + e)
        assert got["SRR"] == pytest.approx(srr) and got["NDR"] == pytest.approx(ndr)
        assert got["SDS"] == pytest.approx(2 * srr * ndr / (srr + ndr))
        assert got["NSCR"] == pytest.approx((e - s) / (p + e + s))

    curves = summary["pass_at_k"]
    assert [pt["k"] for pt in curves["base"]] == [1, 2, 4, 8, 16]
    mean_c1 = statistics.fmean(r["n_correct_rl"] / r["n_samples_rl"] for r in rows)
    assert curves["rl"][0]["pass_at_k"] == pytest.approx(mean_c1)  # pass@1 is the sample accuracy


def test_sensitivity_grid_recomputed(merged, summary):
    table = sensitivity(merged)
    assert len(table) == 13 and table["eps"].iloc[0] == pytest.approx(1e-4) and table["eps"].iloc[-1] == pytest.approx(0.1)
    rows = merged.to_dict("records")
    new = [r for r in rows if not r["greedy_correct_base"] and r["greedy_correct_rl"]]
    for rec in table.to_dict("records"):
        tail = sum(math.isfinite(r["logp_gold_base"]) and r["logp_gold_base"] >= math.log(rec["eps"]) for r in new)
        assert rec["from_tail"] == tail and rec["share_tail"] == pytest.approx(tail / len(new))
    assert summary["sensitivity"] == json.loads(json.dumps(table.to_dict(orient="records")))
    shares = table["share_tail"].to_numpy()
    assert (np.diff(shares) <= 1e-12).all()  # a higher bar can only call fewer facts tail-correct


# ----------------------------------------------------------------------------- bootstrap

def test_intervals_contain_estimates_and_are_seed_deterministic(summary, merged):
    again = summarise(merged, StateConfig(), StatsConfig(n_boot=N_BOOT, seed=0))
    assert json.dumps(again, allow_nan=False) == json.dumps(summary, allow_nan=False)
    other = summarise(merged, StateConfig(), StatsConfig(n_boot=N_BOOT, seed=1))
    assert other["accuracy"]["base"]["ci"] != summary["accuracy"]["base"]["ci"]
    assert other["accuracy"]["base"]["value"] == summary["accuracy"]["base"]["value"]
    estimates = [summary["accuracy"]["base"], summary["accuracy"]["rl"], summary["gain"]["absolute"],
                 summary["gain"]["relative"], summary["redistribution"]["share_tail"], summary["churn"]["net"],
                 summary["entropy"]["change"], summary["logp_shift"]["all"]["median"]]
    for est in estimates:
        lo, hi = est["ci"]
        assert lo <= est["value"] <= hi
    p = summary["accuracy"]["base"]["value"]
    half = 1.96 * math.sqrt(p * (1 - p) / summary["n_facts"])  # normal approximation, for scale
    lo, hi = summary["accuracy"]["base"]["ci"]
    assert (hi - lo) == pytest.approx(2 * half, rel=0.35)


def test_without_samples_sampling_numbers_are_none():
    merged = merged_pair(n=30, seed=5, n_samples=0)
    s = summarise(merged, StateConfig(), StatsConfig(n_boot=50))
    assert not s["has_samples"]
    assert s["pass_at_k"] is None and s["agreement"] is None and s["entropy"] is None and s["slick"] is None
    assert s["support"]["sampling"] is None and s["redistribution_by_criterion"]["sampling"] is None
    json.dumps(s, allow_nan=False)
    with pytest.raises(ScoreTableError, match="n_samples"):
        summarise(merged, StateConfig(criterion="sampling"), StatsConfig(n_boot=50))


def test_empty_and_bad_config():
    with pytest.raises(ScoreTableError, match="empty"):
        summarise(merged_pair(n=10).iloc[:0])
    for kwargs in ({"n_boot": 0}, {"ci": 1.0}, {"seed": -1}):
        with pytest.raises(ValueError, match="StatsConfig"):
            StatsConfig(**kwargs)


# ----------------------------------------------------------------------------- distractors and exposure

POPULARITY = [0, 0, 1, 2, 3, 4, 7, 8, 30, float("nan")]


def with_distractors(table: pd.DataFrame, seed: int) -> pd.DataFrame:
    """A score table with made-up distractor columns (every 13th fact has none) and cycled popularity."""
    rng = np.random.default_rng(seed)
    n = len(table)
    n_d = np.where(np.arange(n) % 13 == 5, 0, 20)
    median = np.where(n_d > 0, table["logp_gold"].to_numpy(dtype=float) + rng.normal(-0.5, 1.5, n), np.nan)
    rank = np.where(n_d > 0, rng.integers(1, 22, n), np.nan).astype(float)
    return table.assign(
        gold_rank=rank, k_q=np.where(n_d > 0, (21 - rank) / 20, np.nan), logp_best_distractor=median + 1.0,
        logp_median_distractor=median, n_distractors=n_d,
        popularity=[POPULARITY[i % len(POPULARITY)] for i in range(n)],
    )


def chance_merged(n: int = 200, seed: int = 0, n_samples: int = 16) -> pd.DataFrame:
    base, (rl,) = make_pair(n=n, seed=seed, n_samples=n_samples)
    return merge_models(add_state_columns(with_distractors(base, 1)), add_state_columns(with_distractors(rl, 2)))


def plain_any_state(row: dict, m: str, criterion: str) -> str:
    if criterion != "chance":
        return plain_state(row, m, criterion)
    if row[f"greedy_correct_{m}"]:
        return "greedy-correct"
    lp, nd = row[f"logp_gold_{m}"], row[f"n_distractors_{m}"]
    ok = (nd > 0 and math.isfinite(lp) and lp >= math.log(EPS)
          and row[f"gold_rank_{m}"] <= math.ceil(0.25 * (nd + 1))
          and lp >= row[f"logp_median_distractor_{m}"] + math.log(2.0))
    return "tail-correct" if ok else "absent"


def test_exposure_buckets_and_never_seen_control_by_hand():
    merged = chance_merged()
    s = summarise(merged, StateConfig(), StatsConfig(n_boot=50))
    assert s["criterion"] == "chance"  # auto with distractor columns on both sides
    rows = merged.to_dict("records")
    exp = s["exposure"]
    assert exp["kind"] == "exposure" and exp["buckets"] == ["0", "1", "2-3", "4-7", "8+"]
    assert exp["n_missing"] == sum(math.isnan(r["popularity"]) for r in rows) == 20

    def bucket(p: float) -> str | None:
        if math.isnan(p):
            return None
        return "0" if p == 0 else "1" if p == 1 else "2-3" if p <= 3 else "4-7" if p <= 7 else "8+"

    got = {(r["bucket"], r["model"], r["criterion"]): r for r in exp["rows"]}
    assert {c for _, _, c in got} == {"logprob", "sampling", "chance"}
    for (b, m, crit), rec in got.items():
        members = [r for r in rows if bucket(r["popularity"]) == b]
        assert rec["n"] == len(members)
        for state in STATES:
            share = sum(plain_any_state(r, m, crit) == state for r in members) / len(members)
            assert rec[state] == pytest.approx(share), (b, m, crit, state)
    zero = [r for r in rows if r["popularity"] == 0]
    never = exp["never_seen"]
    assert never["n"] == len(zero) == 40
    for crit in ("logprob", "sampling", "chance"):
        for m in ("base", "rl"):
            tail = sum(plain_any_state(r, m, crit) == "tail-correct" for r in zero) / len(zero)
            assert never["tail_share"][crit][m] == pytest.approx(tail)
    assert never["greedy_share"]["rl"] == pytest.approx(sum(r["greedy_correct_rl"] for r in zero) / len(zero))

    # chance transitions, pairwise agreement and the distractor summary, by hand
    pairs = Counter((plain_any_state(r, "base", "chance"), plain_any_state(r, "rl", "chance")) for r in rows)
    assert s["transitions"] == {b: {x: pairs[(b, x)] for x in STATES} for b in STATES}
    assert s["transitions_by_criterion"]["chance"] == s["transitions"]
    for m in ("base", "rl"):
        for a, b in (("logprob", "sampling"), ("logprob", "chance"), ("sampling", "chance")):
            agree = statistics.fmean(plain_any_state(r, m, a) == plain_any_state(r, m, b) for r in rows)
            assert s["agreement_pairwise"][m][f"{a}~{b}"] == pytest.approx(agree)
        kq = [r[f"k_q_{m}"] for r in rows if r[f"n_distractors_{m}"] > 0]
        assert s["chance"][m]["k_q_mean"] == pytest.approx(statistics.fmean(kq))
        assert s["chance"][m]["n_without_distractors"] == sum(r[f"n_distractors_{m}"] == 0 for r in rows)
    explicit = summarise(merged, StateConfig(criterion="logprob"), StatsConfig(n_boot=50))
    assert explicit["criterion"] == "logprob" and explicit["exposure"] == s["exposure"]


def test_quantile_buckets_for_non_integer_popularity_and_none_without_it():
    merged = chance_merged(n=40)
    merged["popularity"] = np.linspace(0.5, 100.5, len(merged))
    exp = summarise(merged, StateConfig(), StatsConfig(n_boot=20))["exposure"]
    assert exp["kind"] == "quantile" and len(exp["buckets"]) == 4 and exp["never_seen"] is None
    assert [r["n"] for r in exp["rows"] if r["model"] == "base" and r["criterion"] == "chance"] == [10, 10, 10, 10]
    plain = merged_pair(n=30, seed=3)
    assert summarise(plain.drop(columns=["popularity"]), StateConfig(), StatsConfig(n_boot=20))["exposure"] is None
    s = summarise(plain, StateConfig(), StatsConfig(n_boot=20))
    assert s["criterion"] == "logprob" and s["chance"] is None  # auto without distractor columns
