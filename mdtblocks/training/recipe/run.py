"""The run folder and its logs: the recipe config written to ``OUT/config.json``, the loop settings, logging."""

from __future__ import annotations

import dataclasses
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ...io import write_json
from ..config import TrainConfig
from ..distributed import Distributed
from .cli import RecipeConfig

__all__ = ["announce_builtin", "train_config", "model_overrides", "write_run_config", "setup_logging"]

log = logging.getLogger("mdtblocks.recipe")


def announce_builtin(script: str, real_run: str) -> None:
    """Log that the built-in demo runs, and how to run the real thing."""
    log.info(
        "no --data or --latents: training a small model on the built-in digits (scikit-learn, upscaled) in pixel "
        "space, sized for a CPU (about 5 minutes on 2 cores) -- the same code path as the real run. "
        "The real run: %s (or --latents DIR, from recipes/extract_latents.py). python %s --help lists every flag.",
        real_run, script,
    )


def train_config(cfg: RecipeConfig) -> TrainConfig:
    """The loop settings of a recipe config."""
    return TrainConfig(
        steps=cfg.steps,
        global_batch_size=cfg.global_batch_size,
        micro_batch_size=cfg.micro_batch_size,
        seed=cfg.seed,
        ema_decay=cfg.ema_decay,
        grad_clip=cfg.grad_clip,
        ckpt_every=cfg.ckpt_every,
        log_every=cfg.log_every,
        precision=cfg.precision,
        strategy="fsdp" if cfg.fsdp else "ddp",
        compile=cfg.compile,
        compile_blocks=cfg.compile_blocks,
        activation_checkpointing=cfg.activation_checkpointing,
        num_workers=cfg.num_workers,
        num_samples=cfg.num_samples,
        sample_cfg_scale=cfg.sample_cfg_scale,
        max_bad_steps=cfg.max_bad_steps,
        keep_checkpoints=cfg.keep_checkpoints,
    )


def model_overrides(cfg: Any, names: Sequence[str]) -> dict[str, Any]:
    """The model fields the config overrides (those not ``None``)."""
    return {n: getattr(cfg, n) for n in names if getattr(cfg, n) is not None}


def write_run_config(out: str | Path, cfg: Any, dist: Distributed, **extra: Any) -> None:
    """``OUT/config.json``: every recipe field plus ``extra`` (resolved sizes, model fields), on rank 0."""
    if dist.is_main:
        write_json(Path(out) / "config.json", {**dataclasses.asdict(cfg), **extra, "world_size": dist.world_size})


def setup_logging(dist: Distributed) -> None:
    """INFO logs with timestamps on rank 0, warnings only elsewhere."""
    logging.basicConfig(
        level=logging.INFO if dist.is_main else logging.WARNING,
        format=f"%(asctime)s [rank {dist.rank}] %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
        force=True,
    )
