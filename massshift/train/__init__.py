"""Built-in trainers (GRPO, SFT, RFT, DPO) and the TRL engine; each writes a self-describing run directory."""

from massshift.train.common import TrainResult, plot_training_log
from massshift.train.config import TrainConfig
from massshift.train.dpo import DPOConfig, train_dpo
from massshift.train.grpo import GRPOConfig, train_grpo
from massshift.train.rft import RFTConfig, train_rft
from massshift.train.sft import SFTConfig, train_sft

__all__ = [
    "DPOConfig", "GRPOConfig", "RFTConfig", "SFTConfig", "TrainConfig", "TrainResult", "plot_training_log", "train_dpo",
    "train_grpo", "train_rft", "train_sft",
]
