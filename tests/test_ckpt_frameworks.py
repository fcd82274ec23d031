"""The checkpoints RL frameworks write, each made by the framework's own saving code on a tiny model:
TRL checkpoint-N/ folders (full and PEFT), a folder of them as a trajectory, PyTorch Lightning .ckpt files,
torch.distributed.checkpoint folders."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from conftest import CORPUS
from massshift.cli import app
from massshift.lm.loading import ModelLoadError, load_model
from massshift.lm.specs import expand

runner = CliRunner()


class Settings:
    """A custom object in a Lightning module's hyper_parameters: the checkpoint then needs full unpickling."""

    def __init__(self) -> None:
        self.width = 32


def _logits(model, tokenizer) -> torch.Tensor:
    ids = tokenizer("Q: What is the capital of Italy?\nA: Rome", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model(ids).logits


def _trl_run(out: Path, model_dir: Path, tokenizer, peft: bool = False) -> Path:
    """Two SFT steps with TRL's SFTTrainer, a checkpoint after each (TRL's own checkpoint-N/ layout)."""
    trl = pytest.importorskip("trl")
    from datasets import Dataset
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir))
    args = trl.SFTConfig(output_dir=str(out), max_steps=2, save_steps=1, per_device_train_batch_size=2,
                         learning_rate=1e-2, report_to=[], logging_steps=1, use_cpu=True, max_length=32,
                         save_only_model=False, dataloader_num_workers=0, seed=0)
    extra = {}
    if peft:
        from peft import LoraConfig

        extra["peft_config"] = LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"],
                                          task_type="CAUSAL_LM")
    trainer = trl.SFTTrainer(model=model, args=args, train_dataset=Dataset.from_dict({"text": CORPUS[:8]}),
                             processing_class=tokenizer, **extra)
    trainer.train()
    return out


@pytest.fixture(scope="module")
def trl_full(tmp_path_factory, tiny_model_dir, tokenizer):
    return _trl_run(tmp_path_factory.mktemp("trl_full"), tiny_model_dir, tokenizer)


def test_trl_checkpoint_folder_loads_and_ignores_trainer_state(trl_full, tokenizer, tiny_model_dir):
    ckpt = trl_full / "checkpoint-2"
    assert (ckpt / "trainer_state.json").is_file() and (ckpt / "optimizer.pt").is_file()
    model, tok, info = load_model(str(ckpt))
    assert info.kind == "hf_folder" and tok.get_vocab() == tokenizer.get_vocab()
    base, _, _ = load_model(str(tiny_model_dir))
    assert not torch.equal(_logits(model, tok), _logits(base, tok))  # trained: the weights moved


def test_a_folder_of_checkpoints_is_the_trajectory_in_step_order(trl_full, tmp_path, tiny_model_dir, facts_file,
                                                                 monkeypatch):
    assert expand(str(trl_full)) == [str(trl_full / "checkpoint-1"), str(trl_full / "checkpoint-2")]
    for step in (9, 10, 100):  # numeric order, not string order
        (tmp_path / "run" / f"checkpoint-{step}").mkdir(parents=True)
        (tmp_path / "run" / f"checkpoint-{step}" / "config.json").write_text("{}")
    assert [Path(p).name for p in expand(str(tmp_path / "run"))] == ["checkpoint-9", "checkpoint-10", "checkpoint-100"]
    monkeypatch.setenv("MASSSHIFT_CACHE", str(tmp_path / "cache"))
    res = runner.invoke(app, ["compare", str(tiny_model_dir), str(trl_full), "--facts", str(facts_file),
                              "--samples", "2", "--max-new-tokens", "3", "--out", str(tmp_path / "report"),
                              "--no-progress", "--n-boot", "50"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "report" / "scores_rl1_checkpoint-1.parquet").is_file()
    assert (tmp_path / "report" / "scores_rl2_checkpoint-2.parquet").is_file()
    assert (tmp_path / "report" / "trajectory.csv").is_file()
    res = runner.invoke(app, ["compare", str(trl_full), str(tiny_model_dir), "--facts", str(facts_file)])
    assert res.exit_code == 2 and "BASE must be one of them" in res.output


def test_trl_peft_checkpoint_merges_onto_its_base(tmp_path, tiny_model_dir, tokenizer):
    pytest.importorskip("peft")
    out = _trl_run(tmp_path / "trl_peft", tiny_model_dir, tokenizer, peft=True)
    ckpt = out / "checkpoint-2"
    cfg = json.loads((ckpt / "adapter_config.json").read_text())
    assert Path(cfg["base_model_name_or_path"]) == Path(tiny_model_dir)
    model, tok, info = load_model(str(ckpt))
    assert info.kind == "peft" and info.base == cfg["base_model_name_or_path"]
    base, _, _ = load_model(str(tiny_model_dir))
    assert not torch.equal(_logits(model, tok), _logits(base, tok))


def _lightning_ckpt(out: Path, model_dir: Path, hparams: dict) -> Path:
    pl = pytest.importorskip("pytorch_lightning", reason="pytorch-lightning is not installed (test extra)")
    from transformers import AutoModelForCausalLM

    class LitLM(pl.LightningModule):
        def __init__(self, **kwargs) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.model = AutoModelForCausalLM.from_pretrained(str(model_dir))

        def training_step(self, batch, batch_idx):
            (ids,) = batch
            return self.model(input_ids=ids, labels=ids).loss

        def configure_optimizers(self):
            return torch.optim.AdamW(self.parameters(), lr=1e-2)

    ids = torch.randint(2, 200, (4, 12), generator=torch.Generator().manual_seed(0))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(ids), batch_size=2)
    trainer = pl.Trainer(max_steps=2, default_root_dir=str(out), accelerator="cpu", logger=False,
                         enable_progress_bar=False, enable_model_summary=False)
    lit = LitLM(**hparams)
    trainer.fit(lit, loader)
    (path,) = (out / "checkpoints").glob("*.ckpt")
    return path, lit


def test_lightning_ckpt_reads_with_weights_only(tmp_path, tiny_model_dir, tokenizer):
    path, lit = _lightning_ckpt(tmp_path, tiny_model_dir, {"model_name_or_path": str(tiny_model_dir), "lr": 0.01})
    raw = torch.load(path, weights_only=True)
    assert "pytorch-lightning_version" in raw and all(k.startswith("model.") for k in raw["state_dict"])
    model, tok, info = load_model(str(path))  # the config comes from hyper_parameters' model_name_or_path
    assert info.kind == "state_dict"
    assert torch.equal(_logits(model, tok), _logits(lit.model.eval(), tokenizer))


def test_lightning_ckpt_without_a_model_name_needs_config(tmp_path, tiny_model_dir):
    path, _ = _lightning_ckpt(tmp_path, tiny_model_dir, {"lr": 0.01})
    with pytest.raises(ModelLoadError, match="--config"):
        load_model(str(path))
    model, _, _ = load_model(str(path), config=str(tiny_model_dir))
    assert model.config.model_type == "llama"


def test_lightning_ckpt_holding_objects_is_refused_with_the_reason(tmp_path, tiny_model_dir):
    path, _ = _lightning_ckpt(tmp_path, tiny_model_dir, {"settings": Settings()})
    with pytest.raises(ModelLoadError, match="weights_only=True") as err:
        load_model(str(path), config=str(tiny_model_dir))
    assert "Settings" in str(err.value) and "state_dict" in str(err.value)


def test_distributed_checkpoint_folder_is_converted_once(tmp_path, tiny_model, tokenizer, tiny_model_dir,
                                                         monkeypatch):
    import torch.distributed.checkpoint as dcp

    monkeypatch.setenv("MASSSHIFT_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "step-5"
    dcp.save({"model": tiny_model.state_dict()}, checkpoint_id=str(folder))  # one process, no process group
    assert (folder / ".metadata").is_file() and list(folder.glob("*.distcp"))
    with pytest.raises(ModelLoadError, match="--config"):
        load_model(str(folder))
    model, _, info = load_model(str(folder), config=str(tiny_model_dir))
    assert info.kind == "dcp"
    assert torch.equal(_logits(model, tokenizer), _logits(tiny_model, tokenizer))
    converted = list((tmp_path / "cache" / "dcp").glob("*.pt"))
    assert len(converted) == 1
    mtime = converted[0].stat().st_mtime_ns
    load_model(str(folder), config=str(tiny_model_dir))
    assert converted[0].stat().st_mtime_ns == mtime  # reused, not converted again
    assert pd.Series(expand(str(tmp_path))).tolist() == [str(folder)]  # a folder of DCP steps is a trajectory
