"""Training: the loop, checkpoints, EMA, distributed setup, precision, randomness and recipe plumbing."""

from .adan import Adan
from .checkpoint import TrainState, checkpoint_dir, latest_checkpoint, read_checkpoint
from .config import TrainConfig
from .distributed import Distributed, resolve_device, setup_distributed
from .ema import make_ema, update_ema
from .loop import TrainResult, optimizer_step, train
from .randomness import StepRandomness, derive_seed, draw_step_randomness, step_generator, step_streams

__all__ = [
    "Adan",
    "TrainConfig",
    "train",
    "optimizer_step",
    "TrainResult",
    "Distributed",
    "setup_distributed",
    "resolve_device",
    "make_ema",
    "update_ema",
    "TrainState",
    "checkpoint_dir",
    "latest_checkpoint",
    "read_checkpoint",
    "StepRandomness",
    "derive_seed",
    "draw_step_randomness",
    "step_generator",
    "step_streams",
]
