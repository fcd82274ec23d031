"""The README's Python example runs as written (paths swapped for the tiny test model and facts)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs(tmp_path, tiny_model_dir, facts_file, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) == 1, "README should hold one Python example"
    code = blocks[0]
    for placeholder in ('"test.jsonl"', '"path/to/base"', '"path/to/rl"', '"report/"'):
        assert placeholder in code, placeholder
    monkeypatch.setenv("MASSSHIFT_CACHE", str(tmp_path / "cache"))
    code = (code.replace('"test.jsonl"', repr(str(facts_file)))
            .replace('"path/to/base"', repr(str(tiny_model_dir))).replace('"path/to/rl"', repr(str(tiny_model_dir)))
            .replace('"report/"', repr(str(tmp_path / "report")))
            .replace("ScoreConfig()", "ScoreConfig(generation=GenerationConfig(n_samples=2, max_new_tokens=4))"))
    scope: dict = {}
    exec("from massshift.lm.sampling import GenerationConfig\n" + code, scope)  # noqa: S102
    run = scope["run"]
    assert len(run.facts) == len(scope["facts"]) and (tmp_path / "report" / "report.md").exists()
    assert run.summary["accuracy"]["base"]["value"] == run.summary["accuracy"]["rl"]["value"]  # same model twice
