"""Figures: each plot function draws what its tables say, files are written, and a run dir re-draws."""

from __future__ import annotations

import matplotlib as mpl
import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
from _score_tables import make_pair
from matplotlib.figure import Figure

from massshift.analysis.estimators import StatsConfig, pass_at_k_curve
from massshift.analysis.states import add_state_columns
from massshift.analysis.statistics import sensitivity
from massshift.analysis.transitions import merge_models, state_shares, transition_matrix
from massshift.report import plots
from massshift.report.compare import CompareConfig, write_compare_report
from massshift.score.schema import STATES


@pytest.fixture(scope="module")
def merged():
    base, (rl,) = make_pair(n=60, seed=1)
    return merge_models(add_state_columns(base), add_state_columns(rl))


def _texts(fig: Figure) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def assert_image(path, min_bytes: int = 5_000) -> None:
    assert path.exists() and path.stat().st_size > min_bytes, path
    if path.suffix == ".png":
        img = mpimg.imread(path)
        assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
        assert len(np.unique(img.reshape(-1, img.shape[-1]), axis=0)) > 10  # not a single colour
    else:
        assert path.read_bytes()[:5] == b"%PDF-"


def test_paper_style_is_scoped():
    before = mpl.rcParams["font.size"]
    with plots.paper_style():
        assert mpl.rcParams["font.size"] == plots.PAPER_RC["font.size"]
        assert mpl.rcParams["savefig.dpi"] == 200
    assert mpl.rcParams["font.size"] == before


def test_heatmap_cells_show_counts_and_row_percentages():
    counts = transition_matrix(
        ["greedy-correct"] * 4 + ["tail-correct"] * 2 + ["absent"],
        ["greedy-correct", "greedy-correct", "greedy-correct", "absent", "greedy-correct", "tail-correct", "absent"],
    )
    fig = plots.plot_transition_heatmap(counts, "Base", "RL")
    texts = _texts(fig)
    for expected in ("3\n(75%)", "0\n(0%)", "1\n(25%)", "1\n(50%)", "1\n(100%)"):
        assert expected in texts
    ax = fig.axes[0]
    assert ax.get_xlabel() == "RL state" and ax.get_ylabel() == "Base state"
    assert [t.get_text().split("\n")[0] for t in ax.get_yticklabels()] == list(STATES)
    assert "(n=4)" in ax.get_yticklabels()[0].get_text()


def test_every_plot_function_returns_a_figure(merged, tmp_path):
    curves = {"base": pass_at_k_curve(merged, suffix="_base"), "rl": pass_at_k_curve(merged, suffix="_rl")}
    shares = state_shares({"base": merged["state_base"], "rl": merged["state_rl"]})
    figs = {
        "scatter": plots.plot_logp_scatter(merged, eps=0.0234),
        "shift": plots.plot_logp_shift(merged),
        "pass": plots.plot_pass_at_k(curves, crossing=4),
        "shares": plots.plot_state_shares(merged),
        "sens": plots.plot_redistribution_vs_eps(sensitivity(merged), eps=0.0234),
        "traj": plots.plot_trajectory(shares),
    }
    for fig in figs.values():
        assert isinstance(fig, Figure) and fig.axes
    scatter_ax = figs["scatter"].axes[0]
    n_finite = int((np.isfinite(merged["logp_gold_base"]) & np.isfinite(merged["logp_gold_rl"])).sum())
    assert sum(len(c.get_offsets()) for c in scatter_ax.collections) == n_finite
    assert "3 non-finite not shown" in scatter_ax.get_title()
    share_texts = _texts(figs["shares"])
    gc_share = (merged["state_base"] == "greedy-correct").mean()
    assert f"{gc_share:.0%}" in share_texts
    paths = plots.save_figure(figs["scatter"], tmp_path, "scatter")
    assert [p.name for p in paths] == ["scatter.png", "scatter.pdf"]
    for p in paths:
        assert_image(p)
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temp files


def test_draw_all_redraws_a_run_dir_from_its_tables(tmp_path):
    """Without samples and with one RL table: no pass@k, sampling or trajectory figure
    (and without distractor columns no exposure or gold-rank figure, though popularity exists).

    (test_report draws the full set, PNG and PDF, for a sampled trajectory run.)
    """
    base, (rl,) = make_pair(n=40, seed=2, n_samples=0)
    write_compare_report(base, rl, tmp_path, CompareConfig(stats=StatsConfig(n_boot=50)), figures=False)
    assert not (tmp_path / "figures").exists()
    out = plots.draw_all(tmp_path, formats=("png",))
    assert sorted(p.name for p in out) == sorted(
        f"{n}.png" for n in ("transitions", "logp_scatter", "logp_shift", "state_shares", "gain_kinds",
                             "redistribution_vs_eps"))
    for path in out:
        assert path.parent == tmp_path / "figures"
        assert_image(path)


def test_exposure_and_gold_rank_figures_from_a_chance_run(tmp_path):
    from test_stats import with_distractors

    base, (rl,) = make_pair(n=60, seed=3, n_samples=0)
    summary = write_compare_report(with_distractors(base, 1), with_distractors(rl, 2), tmp_path,
                                   CompareConfig(stats=StatsConfig(n_boot=50)), figures=False)
    assert summary["criterion"] == "chance"
    figs = plots.figures_of(tmp_path)
    assert {"transitions", "transitions_logprob", "exposure_shares", "gold_rank"} <= set(figs)
    # the stacked bars of the exposure figure are the summary's shares, bucket by bucket
    fig = figs["exposure_shares"]
    rows = [r for r in summary["exposure"]["rows"] if r["criterion"] == "chance" and r["n"] > 0]
    for ax, model in zip(fig.axes[:2], ("base", "rl")):
        heights = [p.get_height() for p in ax.patches]
        expected = [r[s] for s in STATES for r in rows if r["model"] == model]
        assert heights == pytest.approx(expected)
    # the gold-rank histogram: each model's step outline encloses share 1 over unit-width bins
    hist = figs["gold_rank"].axes[0]
    assert len(hist.patches) == 2 and all(p.get_label() for p in hist.patches)
    merged = pd.read_parquet(tmp_path / "facts.parquet")
    for patch, m in zip(hist.patches, ("base", "rl")):
        r = merged[f"gold_rank_{m}"].dropna()
        assert patch.get_label().endswith(f"(median {r.median():.0f})")
        xy = patch.get_xy()
        top = xy[:, 1].max()
        assert top == pytest.approx(r.value_counts(normalize=True).max())
    out = plots.draw_all(tmp_path, formats=("png",))
    for path in out:
        assert_image(path)
