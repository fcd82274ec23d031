"""Every config field of data/, lm/ and train/ carries its help text once, and the trainers share a base."""

from __future__ import annotations

import dataclasses

import pytest

from massshift.configio import field_help
from massshift.data.matching import MatchConfig
from massshift.data.split import SplitConfig
from massshift.lm.logprobs import ScoringConfig
from massshift.lm.prompts import PromptConfig
from massshift.lm.sampling import GenerationConfig
from massshift.train.config import TrainConfig
from massshift.train.grpo import GRPOConfig
from massshift.train.rft import RFTConfig
from massshift.train.sft import SFTConfig

CONFIGS = [PromptConfig, MatchConfig, ScoringConfig, GenerationConfig, SplitConfig, TrainConfig, GRPOConfig,
           SFTConfig, RFTConfig]


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_every_field_has_help(cls):
    for f in dataclasses.fields(cls):
        assert field_help(cls, f.name).strip(), f"{cls.__name__}.{f.name}"


def test_trainers_share_the_base():
    shared = {f.name for f in dataclasses.fields(TrainConfig)}
    for cls in (GRPOConfig, SFTConfig):
        assert issubclass(cls, TrainConfig)
        assert shared <= {f.name for f in dataclasses.fields(cls)}
    # a changed default keeps the base's help text
    assert field_help(GRPOConfig, "save_every") == field_help(TrainConfig, "save_every")
    assert GRPOConfig().save_every == 50 and SFTConfig().save_every == 0
    assert GRPOConfig().batch_size == 8 and SFTConfig().batch_size == 16


@pytest.mark.parametrize("cls", [MatchConfig, ScoringConfig, GenerationConfig, SplitConfig, GRPOConfig, RFTConfig],
                         ids=lambda c: c.__name__)
def test_yaml_round_trip(cls, tmp_path):
    cfg = cls()
    cfg.to_yaml(tmp_path / "c.yaml")
    assert cls.from_yaml(tmp_path / "c.yaml") == cfg


def test_shared_validation_names_the_config():
    with pytest.raises(ValueError, match="SFTConfig: lora_r must be >= 0"):
        SFTConfig(lora_r=-1)
    with pytest.raises(ValueError, match="GRPOConfig: lr must be > 0"):
        GRPOConfig(lr=0)
