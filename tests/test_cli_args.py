"""Argument and file errors of score and compare are reported before torch or transformers is imported
(so within about a second), with the usual clear message."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

CASES = [
    (["compare", "nope.ckpt", "nope2.ckpt"], "nope.ckpt: no such file or folder"),
    (["compare", "MODEL", "EMPTY"], "no checkpoint folders"),
    (["compare", "MODEL", "MODEL", "--facts", "FACTS", "--dtype", "float64"], "unknown dtype 'float64' (--dtype)"),
    (["compare", "MODEL", "MODEL", "--facts", "FACTS", "--match", "fuzzy"], "match mode"),
    (["compare", "MODEL", "MODEL", "--facts", "FACTS", "--criterion", "vibes"], "criterion"),
    (["compare", "MODEL", "MODEL", "--facts", "FACTS", "--template", "no placeholder"], "{question}"),
    (["compare", "MODEL", "MODEL", "--facts", "missing.jsonl"], "missing.jsonl: no such file"),
    (["compare", "MODEL", "MODEL", "--facts", "BAD"], "line 2"),
    (["compare", "MODEL", "MODEL", "--facts", "FACTS", "--config", "./no/such/folder"], "--config ./no/such/folder: no such"),
    (["compare", "--base-scores", "missing.parquet", "--rl-scores", "x.parquet"], "no such score table"),
    (["score", "MODEL", "--out", "OUT", "--facts", "FACTS", "--eps-n", "0"], "n must be"),
    (["score", "./typo/model", "--out", "OUT", "--facts", "FACTS"], "no such file or folder"),
]


def test_argument_errors_come_before_the_heavy_imports(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")  # a model folder, as far as argument checks can tell
    (tmp_path / "empty").mkdir()
    (tmp_path / "facts.jsonl").write_text(json.dumps({"question": "Q?", "answers": ["a"]}) + "\n")
    (tmp_path / "bad.jsonl").write_text('{"question": "Q?", "answers": ["a"]}\n{"question": "", "answers": ["b"]}\n')
    subs = {"MODEL": str(model), "EMPTY": str(tmp_path / "empty"), "FACTS": str(tmp_path / "facts.jsonl"),
            "BAD": str(tmp_path / "bad.jsonl"), "OUT": str(tmp_path / "out")}
    cases = [[subs.get(a, a) for a in args] for args, _ in CASES]
    code = ("import json, sys\nfrom typer.testing import CliRunner\nfrom massshift.cli import app\nout = []\n"
            f"for args in {cases!r}:\n"
            "    r = CliRunner().invoke(app, args)\n"
            "    heavy = sorted(m for m in ('torch', 'transformers') if m in sys.modules)\n"
            "    out.append([r.exit_code, r.output, heavy])\n"
            "print(json.dumps(out))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=True)
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    for (args, message), (rc, output, heavy) in zip(CASES, results):
        assert rc == 2, (args, output)
        assert message in " ".join(output.split()), (args, output)
        assert heavy == [], f"{args} imported {heavy} before failing"


@pytest.mark.parametrize("flag", ["--facts", "--config"])
def test_flags_are_named_in_help(flag):
    from typer.testing import CliRunner

    from massshift.cli import app

    res = CliRunner().invoke(app, ["compare", "--help"], env={"COLUMNS": "200"})
    assert flag in res.output
