"""Training: the loop, checkpoints, EMA, optimizers and distributed setup."""

from .adan import Adan
