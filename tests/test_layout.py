"""The package's shape: the folder listing is the data flow, and every import arrow points down it.

Layers, from the bottom: the top-level helpers (seeds, rundir, configio, progress), data, lm, score,
analysis, report; train and synthetic beside report; studies; cli. A module may import its own layer and
the layers below it (as listed in ALLOWED), never one above; the library never imports the command line;
analysis and report never import torch; no two modules import each other, directly or through others.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "massshift"
BASE = "base"
ALLOWED: dict[str, set[str]] = {
    BASE: set(),
    "data": {BASE},
    "lm": {BASE, "data"},
    "score": {BASE, "data", "lm"},
    "analysis": {BASE, "data", "score"},
    "report": {BASE, "data", "score", "analysis"},
    "train": {BASE, "data", "lm", "score"},
    "synthetic": {BASE, "data", "lm", "train"},
    "studies": {BASE, "data", "lm", "score", "analysis", "report", "train", "synthetic"},
    "cli": {BASE, "data", "lm", "score", "analysis", "report", "train", "synthetic", "studies"},
}
NO_TORCH = ("analysis", "report")
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        parts = path.relative_to(PKG.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _layer(module: str) -> str:
    if module == "massshift.__main__":
        return "cli"
    parts = module.split(".")
    if len(parts) >= 2 and (PKG / parts[1]).is_dir():
        return parts[1]
    return BASE


def _imports(path: Path, known: set[str]) -> set[str]:
    """massshift modules imported anywhere in the file (module level and inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            if name in known and name != "massshift":
                found.add(name)
    return found


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    return {m: _imports(p, known) - {m} for m, p in mods.items()}


def test_package_shape():
    subpackages = [p.parent.name for p in PKG.glob("*/__init__.py")]
    top = [p.name for p in PKG.glob("*.py") if p.name not in ("__init__.py", "__main__.py")]
    assert len(subpackages) >= 5, subpackages
    assert len(top) <= 6, top
    assert set(subpackages) <= set(ALLOWED), f"a new subpackage needs its place in ALLOWED: {subpackages}"


def test_no_module_over_the_line_limit():
    long = {str(p.relative_to(PKG)): n for p in PKG.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_every_arrow_points_down():
    bad = []
    for mod, deps in _graph().items():
        src = _layer(mod)
        for dep in deps:
            dst = _layer(dep)
            if dst != src and dst not in ALLOWED[src]:
                bad.append(f"{mod} -> {dep} ({src} may not import {dst})")
    assert not bad, "\n".join(sorted(bad))


def test_no_import_cycle():
    graph = _graph()
    # a package's __init__ and its own modules are one unit: importing massshift.x.y runs massshift.x first
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if dep.startswith(node + "."):
                continue  # a package importing its own submodule is not a cycle
            if state.get(dep) == 1:
                cycles.append(" -> ".join(stack[stack.index(dep):] + [dep]))
            elif dep not in state:
                visit(dep, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    assert not cycles, "\n".join(cycles)


def test_analysis_and_report_never_import_torch():
    mods = [m for m in _modules() if _layer(m) in NO_TORCH]
    code = ("import importlib, sys\n"
            f"for m in {mods!r}:\n    importlib.import_module(m)\n"
            "bad = sorted(k for k in ('torch', 'transformers', 'massshift.cli') if k in sys.modules)\n"
            "print(','.join(bad))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"importing analysis/report loaded {out}"


def test_help_does_not_load_torch():
    code = ("import sys\nfrom typer.testing import CliRunner\nfrom massshift.cli import app\n"
            "r = CliRunner().invoke(app, ['--help'])\nassert r.exit_code == 0, r.output\n"
            "print('torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


def test_docstrings_cite_pages_that_exist():
    import re

    root = PKG.parent
    bad = []
    for path in PKG.rglob("*.py"):
        text = path.read_text()
        if "DESIGN.md" in text or "massshift.evaluate" in text:
            bad.append(f"{path.relative_to(root)} cites DESIGN.md or massshift.evaluate")
        for page in re.findall(r"docs/[\w./-]+\.md", text):
            if not (root / page).exists():
                bad.append(f"{path.relative_to(root)} cites {page}, which does not exist")
    assert not bad, "\n".join(bad)
