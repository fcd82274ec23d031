"""The notebook helpers: headline and matrix views of a compare run, transition filters, training logs,
checkpoint score tables; each checked against the run's own files or a hand-worked table."""

from __future__ import annotations

import json
import logging
import math

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
from _score_tables import make_pair
from matplotlib.figure import Figure

from massshift.analysis.estimators import StatsConfig
from massshift.analysis.states import StateConfig, assign_states
from massshift.analysis.transitions import state_shares
from massshift.report import explore, plots
from massshift.report.compare import CompareConfig, load_compare_run, write_compare_report
from massshift.score.schema import STATES, ScoreTableError

CFG = CompareConfig(stats=StatsConfig(n_boot=200, seed=0))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    base, rls = make_pair(n=120, seed=3, n_rl=2)
    out = tmp_path_factory.mktemp("explore_run")
    write_compare_report(base, [("step-1", rls[0]), ("step-2", rls[1])], out, CFG, figures=False)
    return load_compare_run(out)


@pytest.fixture(scope="module")
def greedy_only_run(tmp_path_factory):
    base, (rl,) = make_pair(n=60, seed=4, n_samples=0)
    out = tmp_path_factory.mktemp("explore_greedy_only")
    write_compare_report(base, rl, out, CFG, figures=False)
    return load_compare_run(out)


# ----------------------------------------------------------------------------- compare run


def test_headline_table_reads_the_summary(run):
    s = run.summary
    table = explore.headline_table(s).set_index("quantity")
    assert list(table.columns) == ["value", "ci_lo", "ci_hi"]
    row = table.loc["greedy accuracy, step-2"]
    assert row["value"] == s["accuracy"]["rl"]["value"]
    assert [row["ci_lo"], row["ci_hi"]] == s["accuracy"]["rl"]["ci"]
    assert table.loc["greedy accuracy, base", "value"] == s["accuracy"]["base"]["value"]
    assert table.loc["McNemar p-value", "value"] == s["mcnemar"]["p_value"]
    assert math.isnan(table.loc["McNemar p-value", "ci_lo"])
    red = s["redistribution"]
    assert table.loc["newly greedy-correct facts", "value"] == red["n_new_greedy"]
    assert table.loc["  of which tail-correct in base", "value"] == red["from_tail"]
    assert table.loc["redistribution share (logprob)", "value"] == red["share_tail"]["value"]
    sampled = s["redistribution_by_criterion"]["sampling"]["share_tail"]["value"]
    assert table.loc["redistribution share (sampling)", "value"] == sampled


def test_headline_table_without_samples(greedy_only_run):
    table = explore.headline_table(greedy_only_run.summary)
    assert not table["quantity"].str.contains("sampling").any()
    assert explore.pass_at_k_curves(greedy_only_run.summary) is None
    assert explore.sampling_share(greedy_only_run.summary) is None


def test_transition_pivot_matches_summary(run):
    counts = explore.transition_pivot(run.transitions, "logprob")
    assert list(counts.index) == list(STATES) and list(counts.columns) == list(STATES)
    assert {b: {r: int(counts.loc[b, r]) for r in STATES} for b in STATES} == run.summary["transitions"]
    shares = explore.transition_pivot(run.transitions, "logprob", "row_share")
    np.testing.assert_allclose(shares.sum(axis=1), 1.0)
    assert explore.transition_pivot(run.transitions, "sampling").to_numpy().sum() == run.summary["n_facts"]
    with pytest.raises(ValueError, match="no transitions under criterion"):
        explore.transition_pivot(run.transitions[run.transitions["criterion"] == "logprob"], "sampling")
    with pytest.raises(ValueError, match="no column"):
        explore.transition_pivot(run.transitions, "logprob", "share")


def test_transition_text_cells(run):
    text = explore.transition_text(run.transitions, "logprob")
    counts = explore.transition_pivot(run.transitions, "logprob")
    shares = explore.transition_pivot(run.transitions, "logprob", "row_share")
    cell = text.loc["tail-correct", "greedy-correct"]
    assert cell.startswith(f"{int(counts.loc['tail-correct', 'greedy-correct'])} (")
    assert f"{shares.loc['tail-correct', 'greedy-correct']:.0%} [" in cell


def _merged(rows: list[tuple]) -> pd.DataFrame:
    """A hand-made merged table: (fact_id, state_base, state_rl, logp_base, logp_rl)."""
    return pd.DataFrame({
        "fact_id": [r[0] for r in rows], "question": [f"Q {r[0]}?" for r in rows],
        "answers": [[f"a{r[0]}"] for r in rows],
        "greedy_base": ["x"] * len(rows), "greedy_rl": [f"a{r[0]}" for r in rows],
        "state_base": [r[1] for r in rows], "state_rl": [r[2] for r in rows],
        "state_sampling_base": ["absent"] * len(rows), "state_sampling_rl": ["greedy-correct"] * len(rows),
        "logp_gold_base": [r[3] for r in rows], "logp_gold_rl": [r[4] for r in rows],
    })


def test_filter_transitions_hand_worked():
    merged = _merged([
        ("a", "tail-correct", "greedy-correct", -2.0, -0.5),   # +1.5
        ("b", "tail-correct", "greedy-correct", -3.0, -0.1),   # +2.9
        ("c", "tail-correct", "greedy-correct", -np.inf, -0.2),  # not finite: last
        ("d", "absent", "greedy-correct", -9.0, -0.3),
        ("e", "tail-correct", "tail-correct", -2.0, -2.0),
    ])
    out = explore.filter_transitions(merged, "tail-correct", "greedy-correct")
    assert list(out["fact_id"]) == ["b", "a", "c"]
    np.testing.assert_allclose(out["delta_logp"][:2], [2.9, 1.5])
    assert math.isnan(out["delta_logp"].iloc[2])
    assert list(out.columns) == ["fact_id", "question", "answers", "greedy_base", "greedy_rl",
                                 "logp_gold_base", "logp_gold_rl", "delta_logp"]
    by_sampling = explore.filter_transitions(merged, "absent", "greedy-correct", criterion="sampling")
    assert len(by_sampling) == 5
    assert explore.filter_transitions(merged, "greedy-correct", "absent").empty
    with pytest.raises(ValueError, match="unknown state"):
        explore.filter_transitions(merged, "tail", "greedy-correct")
    with pytest.raises(ValueError, match="was not computed"):
        explore.filter_transitions(merged.drop(columns=["state_sampling_rl"]), "absent", "absent", "sampling")


def test_filter_transitions_partitions_the_run(run):
    counts = explore.transition_pivot(run.transitions, "logprob")
    seen = []
    for b in STATES:
        for r in STATES:
            part = explore.filter_transitions(run.facts, b, r, criterion="logprob")
            assert len(part) == counts.loc[b, r]
            assert {"n_correct_base", "n_correct_rl"} <= set(part.columns)
            seen += list(part["fact_id"])
    assert sorted(seen) == sorted(run.facts["fact_id"])


def test_paper_figures_are_draw_all_figures(run, tmp_path):
    """Same names and pixels as ``plots.draw_all`` (the logp_shift jitter is seeded, so it matches too)."""
    figs = explore.paper_figures(run)
    assert all(isinstance(f, Figure) for f in figs.values())
    drawn = {p.stem: p for p in plots.draw_all(run.run_dir, formats=("png",))}
    assert set(figs) == set(drawn)
    for name, fig in figs.items():
        (path,) = plots.save_figure(fig, tmp_path, name, formats=("png",))
        a, b = mpimg.imread(path), mpimg.imread(drawn[name])
        assert a.shape == b.shape, name
        assert np.array_equal(a, b), name


def test_figure_inputs(run):
    curves = explore.pass_at_k_curves(run.summary)
    assert list(curves) == ["base", "step-2"]
    assert list(curves["base"].columns) == ["k", "pass_at_k"]
    sens = explore.sensitivity_table(run.summary)
    assert {"eps", "share_tail"} <= set(sens.columns) and len(sens) == 13
    assert explore.labels(run.summary) == ("base", "step-2")
    assert explore.labels({}) == ("base", "rl")


# ----------------------------------------------------------------------------- training runs


def _write_log(path, rows) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


LOG = [
    {"step": 0, "eval_accuracy": 0.1},
    *[{"step": s, "reward_mean": 0.1 * s, "reward_std": 0.2, "zero_var_share": 1 - 0.1 * s, "kl": None,
       "entropy": 2.0, "completion_len": 3.0 + s, "greedy_reward": 0.5} for s in range(1, 9)],
]


def test_read_train_log(tmp_path):
    _write_log(tmp_path / "train_log.jsonl", LOG[::-1])
    log = explore.read_train_log(tmp_path)
    assert list(log["step"]) == list(range(9))
    pd.testing.assert_frame_equal(log, explore.read_train_log(tmp_path / "train_log.jsonl"))
    assert log["kl"].isna().all()
    with pytest.raises(FileNotFoundError, match="train_log.jsonl"):
        explore.read_train_log(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    _write_log(tmp_path / "empty" / "train_log.jsonl", [])
    with pytest.raises(ValueError, match="empty"):
        explore.read_train_log(tmp_path / "empty")


def test_training_summary(tmp_path):
    _write_log(tmp_path / "train_log.jsonl", LOG)
    table = explore.training_summary(explore.read_train_log(tmp_path), window=2).set_index("metric")
    assert "kl" not in table.index  # never logged (beta = 0)
    assert table.loc["reward_mean", "n_logged"] == 8
    assert table.loc["reward_mean", "first"] == pytest.approx(0.15)
    assert table.loc["reward_mean", "last"] == pytest.approx(0.75)
    assert table.loc["eval_accuracy", "n_logged"] == 1
    assert table.loc["eval_accuracy", "first"] == table.loc["eval_accuracy", "last"] == 0.1
    two_evals = explore.read_train_log(tmp_path).assign(eval_accuracy=[0.1] + [None] * 7 + [0.4])
    table = explore.training_summary(two_evals).set_index("metric")  # window 5, but only 2 values
    assert (table.loc["eval_accuracy", "first"], table.loc["eval_accuracy", "last"]) == (0.1, 0.4)
    assert table.loc["reward_mean", "first"] == pytest.approx(0.25)  # 8 values: halves of 4


def test_plot_training_diagnostics(tmp_path):
    _write_log(tmp_path / "train_log.jsonl", LOG)
    fig = explore.plot_training_diagnostics(explore.read_train_log(tmp_path))
    assert isinstance(fig, Figure) and len(fig.axes) == len(explore.TRAINING_PANELS)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == [t for _, t in explore.TRAINING_PANELS]
    kl_ax = fig.axes[titles.index("KL to the initial policy")]
    assert [t.get_text() for t in kl_ax.texts] == ["not logged"] and not kl_ax.lines
    reward_ax = fig.axes[0]
    np.testing.assert_allclose(reward_ax.lines[0].get_ydata(), [0.1 * s for s in range(1, 9)])
    assert len(reward_ax.lines) == 3  # per step, moving average, greedy answer


def test_saved_checkpoints(tmp_path):
    for name in ("step-10", "step-2", "step-x", "final"):
        (tmp_path / ("checkpoints" if name != "final" else "") / name).mkdir(parents=True)
    table = explore.saved_checkpoints(tmp_path)
    assert list(table["name"]) == ["step-2", "step-10", "final"]
    assert explore.saved_checkpoints(tmp_path / "nothing").empty


# ----------------------------------------------------------------------------- checkpoints' score tables


@pytest.fixture()
def score_dirs(tmp_path):
    base, rls = make_pair(n=40, seed=5, n_rl=2)
    (tmp_path / "tables").mkdir()
    base.to_parquet(tmp_path / "tables" / "base.parquet")
    rls[0].to_parquet(tmp_path / "tables" / "step-10.parquet")
    rls[1].to_parquet(tmp_path / "tables" / "step-2.parquet")
    (tmp_path / "score-out").mkdir()
    rls[1].to_parquet(tmp_path / "score-out" / "scores.parquet")  # a `massshift score` folder
    return tmp_path


def test_find_score_tables(score_dirs, caplog):
    t = score_dirs / "tables"
    assert [label for label, _ in explore.find_score_tables([t])] == ["base", "step-2", "step-10"]
    text = f"{t / 'base.parquet'}, {score_dirs / 'score-out'},{score_dirs / 'missing'}"
    with caplog.at_level(logging.WARNING, logger="massshift.report.explore"):
        found = explore.find_score_tables(text)
    assert found == [("base", t / "base.parquet"), ("score-out", score_dirs / "score-out" / "scores.parquet")]
    assert "missing" in caplog.text
    with pytest.raises(ValueError, match="unique"):
        explore.find_score_tables([t / "base.parquet", t])


def test_checkpoint_state_shares(score_dirs):
    tables = explore.load_score_tables(explore.find_score_tables(score_dirs / "tables"))
    assert list(tables) == ["base", "step-2", "step-10"]
    config = StateConfig(eps=0.05)
    shares = explore.checkpoint_state_shares(tables, config)
    expected = state_shares({label: assign_states(df, config) for label, df in tables.items()})
    pd.testing.assert_frame_equal(shares, expected)
    assert plots.plot_trajectory(shares) is not None
    with pytest.raises(ScoreTableError, match="different facts"):
        explore.checkpoint_state_shares({"a": tables["base"], "b": tables["step-2"].iloc[:-1]})
    with pytest.raises(ValueError, match="no score tables"):
        explore.checkpoint_state_shares({})
