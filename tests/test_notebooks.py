"""Every notebook in notebooks/ runs top to bottom against small run directories built here.

The run directories are real: a compare run written by ``report.write_compare_report``
from synthetic score tables (200 facts, three RL checkpoints, samples), and a GRPO
run of the tiny test model (4 steps, checkpoints at steps 2 and 4) whose
checkpoints are scored with ``score_table.score_facts``. Notebooks read them
through the ``MASSSHIFT_*`` environment variables of their first code cell.
Committed notebooks carry no outputs.
"""

from __future__ import annotations

import ast
import copy
import importlib
import importlib.util
import os
from pathlib import Path

import matplotlib.image as mpimg
import nbformat
import numpy as np
import pytest
from _score_tables import make_pair

from conftest import FACTS
from massshift.analysis.estimators import StatsConfig
from massshift.report import plots
from massshift.report.compare import CompareConfig, write_compare_report

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
CELL_TIMEOUT_S = 120


def build_runs(root: Path, model, tokenizer) -> dict[str, str]:
    """Write the run directories under ``root``; returns the notebooks' environment variables."""
    from massshift.data.facts import facts_from_records
    from massshift.lm.loading import load_model
    from massshift.lm.sampling import GenerationConfig
    from massshift.rundir import write_parquet
    from massshift.score.table import ScoreConfig, score_facts
    from massshift.train.grpo import GRPOConfig, train_grpo

    base, rls = make_pair(n=200, seed=0, n_rl=3)
    compare = root / "compare"
    write_compare_report(base, [(f"step-{10 * (i + 1)}", t) for i, t in enumerate(rls)], compare,
                         CompareConfig(stats=StatsConfig(n_boot=200)), figures=False)

    facts = facts_from_records(FACTS)
    grpo = root / "grpo"
    cfg = GRPOConfig(steps=4, batch_size=4, num_generations=4, lr=1e-3, max_new_tokens=6, beta=0.04,
                     save_every=2, eval_every=2, threads=1)
    train_grpo(copy.deepcopy(model), tokenizer, facts, grpo, cfg, eval_facts=facts)
    score_cfg = ScoreConfig(generation=GenerationConfig(n_samples=4, max_new_tokens=6, seed=0))
    scores = root / "grpo-scores"
    write_parquet(scores / "base.parquet", score_facts(model, tokenizer, facts, score_cfg, label="base"))
    for step in (2, 4):
        ckpt, tok, _ = load_model(str(grpo / "checkpoints" / f"step-{step}"))
        write_parquet(scores / f"step-{step}.parquet", score_facts(ckpt, tok, facts, score_cfg, label=f"step-{step}"))
    return {"MASSSHIFT_RUN": str(compare), "MASSSHIFT_GRPO_RUN": str(grpo), "MASSSHIFT_SCORES": str(scores),
            "MASSSHIFT_FIGURES_OUT": str(root / "notebook-figures"), "MASSSHIFT_FIGURE_FORMATS": "png",
            "MASSSHIFT_RUN_OWN": "0"}  # never load a model in the "Your own checkpoints" cell


@pytest.fixture(scope="module")
def run_env(tmp_path_factory, tiny_model, tokenizer):
    return build_runs(tmp_path_factory.mktemp("notebook_runs"), tiny_model, tokenizer)


def _code_cells(nb) -> list:
    return [c for c in nb.cells if c.cell_type == "code"]


def test_notebooks_exist():
    names = {p.name for p in NOTEBOOKS}
    assert {"explore_compare.ipynb", "training_dynamics.ipynb", "reproduce_paper_figures.ipynb"} <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in _code_cells(nb):
        assert cell.execution_count is None, f"{path.name}: a cell has execution_count {cell.execution_count}"
        assert cell.outputs == [], f"{path.name}: a cell has outputs; clear them before committing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_library_names_resolve(path):
    """Every ``from massshift... import name`` resolves, also in cells the test does not run (RUN_OWN)."""
    nb = nbformat.read(path, as_version=4)
    for cell in _code_cells(nb):
        source = "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith("%"))
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("massshift"):
                module = importlib.import_module(node.module)
                for alias in node.names:
                    assert hasattr(module, alias.name) or importlib.util.find_spec(f"{node.module}.{alias.name}"), \
                        f"{path.name}: {node.module}.{alias.name} does not exist"


MIN_FIGURES = {"explore_compare": 8, "training_dynamics": 3, "reproduce_paper_figures": 8}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, run_env):
    """The notebook executes top to bottom (nbclient raises on a failing cell) and shows its figures."""
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK_DIR)}})
    client.execute(env={**os.environ, **run_env})
    outputs = [o for c in _code_cells(nb) for o in c.outputs]
    errors = [o for o in outputs if o.output_type == "error"]
    assert not errors, f"{path.name}: {errors[0].ename}: {errors[0].evalue}"
    n_images = sum("image/png" in o.get("data", {}) for o in outputs)
    assert n_images >= MIN_FIGURES.get(path.stem, 0), f"{path.name} showed {n_images} figures"
    if path.stem == "reproduce_paper_figures":
        _assert_same_figures(Path(run_env["MASSSHIFT_RUN"]), Path(run_env["MASSSHIFT_FIGURES_OUT"]))


def _assert_same_figures(run_dir: Path, saved: Path) -> None:
    """The notebook saved what ``plots.draw_all`` draws: the same names and the same pictures.

    Not byte for byte: the notebook shows a figure before saving it (the second draw moves the heatmap's
    colour bar by a pixel).
    """
    drawn = plots.draw_all(run_dir, formats=("png",))
    assert sorted(p.name for p in saved.glob("*.png")) == sorted(p.name for p in drawn)
    for ref in drawn:
        a, b = mpimg.imread(ref), mpimg.imread(saved / ref.name)
        assert a.shape == b.shape and np.abs(a - b).mean() < 0.002, f"{ref.name} differs from draw_all's"
