"""--facts hf:NAME[:SPLIT]: a dataset read by `datasets` from the local cache only, mapped by the presets."""

from __future__ import annotations

import json
import time

import pytest
from typer.testing import CliRunner

from massshift.cli import app
from massshift.data.facts import FactsError
from massshift.data.hf import load_hf_facts, parse_hf_spec

datasets = pytest.importorskip("datasets")
runner = CliRunner()


def _popqa_rows(n: int = 6) -> list[dict]:
    return [{"id": i, "subj": f"Person {i}", "prop": "occupation", "obj": f"job {i % 3}", "s_pop": 10 * i,
             "question": f"What is Person {i}'s occupation?", "possible_answers": json.dumps([f"job {i % 3}"])}
            for i in range(n)]


def _triviaqa_rows() -> list[dict]:
    return [{"question": "Which planet is largest?", "question_id": "tq1",
             "answer": {"value": "Jupiter", "aliases": ["Jupiter", "Planet Jupiter"]}},
            {"question": "What is the capital of Peru?", "question_id": "tq2",
             "answer": {"value": "Lima", "aliases": ["Lima"]}}]


@pytest.fixture()
def hf_cache(tmp_path, monkeypatch):
    """A datasets cache holding two datasets, each loaded once with `datasets` from a local folder (as a
    download would leave them), then read back by name."""
    cache = tmp_path / "hf_datasets"
    for name, splits in (("popqa_mini", {"test": _popqa_rows(), "train": _popqa_rows(3)}),
                         ("trivia_mini", {"validation": _triviaqa_rows()})):
        folder = tmp_path / "src" / name
        folder.mkdir(parents=True)
        for split, rows in splits.items():
            (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        datasets.load_dataset(str(folder), cache_dir=str(cache))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(cache))
    return cache


def test_parse():
    assert parse_hf_spec("hf:akariasai/PopQA:test") == ("akariasai/PopQA", "test")
    assert parse_hf_spec("hf:popqa") == ("popqa", None)
    with pytest.raises(FactsError, match="hf:NAME"):
        parse_hf_spec("hf:")


def test_cached_datasets_load_by_name_through_the_presets(hf_cache):
    popqa = load_hf_facts("hf:popqa_mini:test")
    assert len(popqa) == 6 and popqa.attrs["schema"] == "popqa"
    assert popqa["subject"].tolist()[0] == "Person 0" and popqa["answers"].tolist()[1] == ["job 1"]
    assert len(load_hf_facts("hf:popqa_mini:train")) == 3
    assert len(load_hf_facts("hf:popqa_mini")) == 6  # several splits, one is test: test
    trivia = load_hf_facts("hf:trivia_mini")  # one split: that one
    assert trivia.attrs["schema"] == "triviaqa" and trivia["answers"].tolist()[0] == ["Jupiter", "Planet Jupiter"]
    with pytest.raises(FactsError, match="no split 'dev'; the dataset has"):
        load_hf_facts("hf:popqa_mini:dev")


def test_an_uncached_dataset_is_an_error_never_a_download(hf_cache, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)  # even with offline mode off
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    start = time.perf_counter()
    with pytest.raises(FactsError, match="not in the local datasets cache .* never downloads"):
        load_hf_facts("hf:massshift-test/no-such-dataset:test")
    assert time.perf_counter() - start < 10
    assert datasets.config.HF_HUB_OFFLINE is False  # the offline switch is put back


def test_save_to_disk_folder(tmp_path):
    ds = datasets.Dataset.from_list(_popqa_rows(4))
    ds.save_to_disk(str(tmp_path / "saved"))
    assert len(load_hf_facts(f"hf:{tmp_path / 'saved'}")) == 4


def test_cli_scores_an_hf_dataset(hf_cache, tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("MASSSHIFT_CACHE", str(tmp_path / "cache"))
    res = runner.invoke(app, ["score", str(tiny_model_dir), "--facts", "hf:popqa_mini:test", "--out",
                              str(tmp_path / "s"), "--samples", "2", "--max-new-tokens", "3", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "6 facts" in res.output
    res = runner.invoke(app, ["score", str(tiny_model_dir), "--facts", "hf:nope_ds", "--out", str(tmp_path / "t")])
    assert res.exit_code == 2 and "not in the local datasets cache" in res.output
