"""Built-in trainers (GRPO, SFT, RFT) and the TRL engine; each writes a self-describing run directory."""

from massshift.train.common import TrainResult, plot_training_log
from massshift.train.config import TrainConfig
from massshift.train.grpo import GRPOConfig, train_grpo
from massshift.train.rft import RFTConfig, train_rft
from massshift.train.sft import SFTConfig, train_sft

__all__ = [
    "GRPOConfig", "RFTConfig", "SFTConfig", "TrainConfig", "TrainResult", "plot_training_log", "train_grpo", "train_rft",
    "train_sft",
]
