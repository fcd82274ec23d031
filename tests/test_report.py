"""The compare report: files written, numbers recomputed from facts.parquet, determinism, refusals."""

from __future__ import annotations

import json
import math
import statistics
from collections import Counter

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
from _score_tables import make_pair

from massshift.analysis.estimators import StatsConfig
from massshift.analysis.states import StateConfig
from massshift.report.compare import CompareConfig, CompareRun, load_compare_run, write_compare_report
from massshift.score.schema import STATES, ScoreTableError

EPS = -math.log(0.05) / 128
CFG = CompareConfig(stats=StatsConfig(n_boot=200, seed=0), base_label="base", rl_label="rl")
FIGURES = ("transitions", "transitions_sampling", "logp_scatter", "logp_shift", "state_shares",
           "redistribution_vs_eps", "pass_at_k", "trajectory")


def plain_state(greedy: bool, logp: float, n_correct: int, criterion: str = "logprob") -> str:
    if greedy:
        return "greedy-correct"
    tail = (math.isfinite(logp) and logp >= math.log(EPS)) if criterion == "logprob" else n_correct >= 1
    return "tail-correct" if tail else "absent"


@pytest.fixture(scope="module")
def tables():
    return make_pair(n=200, seed=0, n_rl=2)


@pytest.fixture(scope="module")
def run(tables, tmp_path_factory):
    base, rls = tables
    out = tmp_path_factory.mktemp("compare")
    summary = write_compare_report(base, [("step-1", rls[0]), ("step-2", rls[1])], out, CFG,
                                   extra_config={"facts": "synthetic"})
    return out, summary


def test_run_dir_holds_every_file(run):
    out, _ = run
    for name in ("config.yaml", "env.json", "facts.parquet", "transitions.csv", "summary.json", "report.md",
                 "trajectory.csv"):
        assert (out / name).stat().st_size > 0, name
    for name in FIGURES:
        png, pdf = out / "figures" / f"{name}.png", out / "figures" / f"{name}.pdf"
        assert png.stat().st_size > 5_000 and pdf.stat().st_size > 5_000, name
        assert pdf.read_bytes()[:5] == b"%PDF-"
        img = mpimg.imread(png)
        assert img.shape[0] > 100 and img.std() > 0.01, name  # not a single colour
    run_ = load_compare_run(out)
    assert isinstance(run_, CompareRun)
    assert run_.config["facts"] == "synthetic" and run_.config["compare"]["stats"]["n_boot"] == 200
    assert run_.config["checkpoints"] == {"base": "base", "rl": ["step-1", "step-2"]}
    assert list(run_.trajectory["checkpoint"].unique()) == ["base", "step-1", "step-2"]
    assert json.loads((out / "env.json").read_text())["seed"] == 0


def test_summary_numbers_recomputed_from_facts_parquet(run):
    out, summary = run
    facts = pd.read_parquet(out / "facts.parquet")
    assert len(facts) == summary["n_facts"] == 200  # NaN / -inf rows kept
    assert summary["labels"] == {"base": "base", "rl": "step-2"}  # the last checkpoint is the headline
    assert (facts["model_rl"] == "rl1").all() and (facts["model_base"] == "base").all()
    rows = facts.to_dict("records")
    sb = [plain_state(r["greedy_correct_base"], r["logp_gold_base"], r["n_correct_base"]) for r in rows]
    sr = [plain_state(r["greedy_correct_rl"], r["logp_gold_rl"], r["n_correct_rl"]) for r in rows]
    assert list(facts["state_base"]) == sb and list(facts["state_rl"]) == sr
    assert summary["n_nonfinite_logp"] == {
        m: sum(not math.isfinite(r[f"logp_gold_{m}"]) for r in rows) for m in ("base", "rl")}
    acc_b = sum(r["greedy_correct_base"] for r in rows) / 200
    acc_r = sum(r["greedy_correct_rl"] for r in rows) / 200
    assert summary["accuracy"]["base"]["value"] == pytest.approx(acc_b)
    assert summary["gain"]["relative"]["value"] == pytest.approx(acc_r / acc_b - 1)
    pairs = Counter(zip(sb, sr))
    assert summary["transitions"] == {b: {s: pairs[(b, s)] for s in STATES} for b in STATES}
    new = [i for i, r in enumerate(rows) if not r["greedy_correct_base"] and r["greedy_correct_rl"]]
    lost = [i for i, r in enumerate(rows) if r["greedy_correct_base"] and not r["greedy_correct_rl"]]
    from_tail = sum(sb[i] == "tail-correct" for i in new)
    red = summary["redistribution"]
    assert (red["n_new_greedy"], red["from_tail"], red["from_absent"]) == (len(new), from_tail, len(new) - from_tail)
    assert (summary["mcnemar"]["b"], summary["mcnemar"]["c"]) == (len(lost), len(new))
    assert summary["churn"]["net"]["value"] == len(new) - len(lost)
    shifts = [r["logp_gold_rl"] - r["logp_gold_base"] for r, s in zip(rows, sb)
              if s == "tail-correct" and math.isfinite(r["logp_gold_rl"]) and math.isfinite(r["logp_gold_base"])]
    assert summary["logp_shift"]["tail-correct"]["median"]["value"] == pytest.approx(statistics.median(shifts))


def test_transitions_csv_and_trajectory_csv(run, tables):
    out, _ = run
    facts = pd.read_parquet(out / "facts.parquet")
    trans = pd.read_csv(out / "transitions.csv")
    assert list(trans.columns) == ["criterion", "base_state", "rl_state", "count", "row_share", "row_share_lo",
                                   "row_share_hi"]
    for crit in ("logprob", "sampling"):
        part = trans[trans["criterion"] == crit]
        assert len(part) == 9
        pairs = Counter(zip(facts[f"state_{crit}_base"], facts[f"state_{crit}_rl"]))
        for rec in part.to_dict("records"):
            total = sum(pairs[(rec["base_state"], s)] for s in STATES)
            assert rec["count"] == pairs[(rec["base_state"], rec["rl_state"])]
            if total:
                assert rec["row_share"] == pytest.approx(rec["count"] / total)
                assert rec["row_share_lo"] - 1e-12 <= rec["row_share"] <= rec["row_share_hi"] + 1e-12
            else:
                assert np.isnan(rec["row_share"])
    base, rls = tables
    traj = pd.read_csv(out / "trajectory.csv")
    for label, table in (("base", base), ("step-1", rls[0]), ("step-2", rls[1])):
        states = Counter(plain_state(r["greedy_correct"], r["logp_gold"], r["n_correct"])
                         for r in table.to_dict("records"))
        part = traj[traj["checkpoint"] == label].set_index("state")
        assert {s: int(part.loc[s, "count"]) for s in STATES} == {s: states[s] for s in STATES}


def test_report_md_states_the_verdict_and_links_figures(run):
    out, summary = run
    text = (out / "report.md").read_text()
    red = summary["redistribution"]
    n, x, z = red["n_new_greedy"], red["from_tail"], red["from_absent"]
    assert (f"By state in the base, {x} ({100 * x / n:.1f}%) of the {n} facts that became greedy-correct were "
            f"tail-correct and {z} ({100 * z / n:.1f}%) were absent") in text
    # the verdict leads with what the gain is made of, counted from facts.parquet's gain_kind column
    facts = pd.read_parquet(out / "facts.parquet")
    kinds = facts["gain_kind"].value_counts().to_dict()
    assert sum(kinds.values()) == n == summary["gain_decomposition"]["n_gained"]
    parts = ", ".join(f"{kinds[k]} {k}" for k in ("format", "guess", "recall", "acquisition") if kinds.get(k))
    assert f"Of {n} newly greedy-correct facts: {parts}" in text and "## What kind of gain" in text
    assert "no longer greedy-correct" in text
    nf = summary["n_nonfinite_logp"]
    assert f"base {nf['base']}, step-2 {nf['rl']}" in text
    gc = summary["transitions"]["greedy-correct"]
    assert f"| greedy-correct | {gc['greedy-correct']} (" in text
    for name in FIGURES:
        assert f"(figures/{name}.png)" in text


def test_same_seed_gives_byte_identical_summary(tables, tmp_path, run):
    base, rls = tables
    out, _ = run
    write_compare_report(base, [("step-1", rls[0]), ("step-2", rls[1])], tmp_path / "a", CFG, figures=False)
    write_compare_report(base, [("step-1", rls[0]), ("step-2", rls[1])], tmp_path / "b",
                         CompareConfig(stats=StatsConfig(n_boot=200, seed=7)), seed=0, figures=False)
    first = (out / "summary.json").read_bytes()
    assert (tmp_path / "a" / "summary.json").read_bytes() == first
    assert (tmp_path / "b" / "summary.json").read_bytes() == first
    json.loads(first)  # valid JSON: NaN written as null


def test_single_rl_table_uses_rl_label_and_no_trajectory(tables, tmp_path):
    base, rls = tables
    summary = write_compare_report(base, rls[0], tmp_path, CompareConfig(stats=StatsConfig(n_boot=50), rl_label="grpo"), figures=False)
    assert summary["labels"] == {"base": "base", "rl": "grpo"} and summary["checkpoints"] == ["grpo"]
    assert not (tmp_path / "trajectory.csv").exists()
    assert load_compare_run(tmp_path).trajectory is None


def test_mismatched_fact_sets_raise_naming_ids(tables, tmp_path):
    base, rls = tables
    with pytest.raises(ScoreTableError, match="3 of 200 base facts are missing from rl .*'fact-0197'"):
        write_compare_report(base, rls[0].iloc[:197], tmp_path / "x", CFG, figures=False)
    assert not (tmp_path / "x").exists()  # nothing written before the check


def test_empty_table_and_bad_config_raise_clear_errors(tables, tmp_path):
    base, rls = tables
    with pytest.raises(ScoreTableError, match="rl score table .* is empty"):
        write_compare_report(base, rls[0].iloc[:0], tmp_path, CFG, figures=False)
    with pytest.raises(ScoreTableError, match="base score table .* is empty"):
        write_compare_report(pd.DataFrame(), rls[0], tmp_path, CFG, figures=False)
    with pytest.raises(ScoreTableError, match="lacks column"):
        write_compare_report(base.drop(columns=["logp_gold"]), rls[0], tmp_path, CFG, figures=False)
    with pytest.raises(ValueError, match="StateConfig.alpha"):
        CompareConfig(states=StateConfig(alpha=2.0))
    with pytest.raises(ValueError, match="must differ"):
        CompareConfig(base_label="m", rl_label="m")


def test_chance_run_writes_chance_rows_exposure_table_and_control(tmp_path):
    from test_stats import with_distractors

    base, rls = make_pair(n=80, seed=4, n_samples=8)
    summary = write_compare_report(with_distractors(base, 1), with_distractors(rls[0], 2), tmp_path,
                                   CompareConfig(stats=StatsConfig(n_boot=50)), figures=False)
    assert summary["criterion"] == "chance"
    trans = pd.read_csv(tmp_path / "transitions.csv")
    assert list(dict.fromkeys(trans["criterion"])) == ["logprob", "sampling", "chance"]
    facts = pd.read_parquet(tmp_path / "facts.parquet")
    assert (facts["state_base"] == facts["state_chance_base"]).all()
    chance = trans[trans["criterion"] == "chance"]
    for rec in chance.to_dict("records"):
        n = ((facts["state_chance_base"] == rec["base_state"]) & (facts["state_chance_rl"] == rec["rl_state"])).sum()
        assert rec["count"] == n
    text = (tmp_path / "report.md").read_text()
    assert "state criterion: `chance`" in text and "## Exposure (state shares by exposure count)" in text
    zero = facts[facts["popularity"] == 0]
    share = (zero["state_chance_rl"] == "tail-correct").mean()
    assert f"Never-seen control (popularity 0, n = {len(zero)};" in text
    assert f"`chance` base {100 * (zero['state_chance_base'] == 'tail-correct').mean():.1f}%, rl {100 * share:.1f}%" in text
    row_0 = next(line for line in text.splitlines() if line.startswith("| 0 |"))
    assert row_0.startswith(f"| 0 | {len(zero)} |")
    assert "agreement of the logprob and chance states" in text and "mean K_q" in text
    # one side without distractor columns: auto falls back to logprob for both
    mixed = write_compare_report(with_distractors(base, 1), rls[0], tmp_path / "mixed", CompareConfig(stats=StatsConfig(n_boot=50)),
                                 figures=False)
    assert mixed["criterion"] == "logprob" and mixed["chance"] is None
    with pytest.raises(ScoreTableError, match="gold_rank"):
        write_compare_report(base, rls[0], tmp_path / "explicit", CompareConfig(states=StateConfig(criterion="chance"), stats=StatsConfig(n_boot=50)),
                             figures=False)
