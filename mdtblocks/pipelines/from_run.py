"""A pipeline from a training run: the EMA weights of its newest (or a given) checkpoint."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..models.pretrained import load_pretrained
from ..sampling.schedulers import make_scheduler
from ..training.checkpoint import latest_checkpoint
from .mdt_pipeline import MDTPipeline

__all__ = ["pipeline_from_checkpoint"]


def pipeline_from_checkpoint(
    path: str | os.PathLike,
    *,
    vae: Any = None,
    scheduler: Any = None,
    id2label: dict[str, str] | dict[int, str] | None = None,
    weights_name: str = "ema.safetensors",
    noise_schedule: str = "linear",
    predict: str = "epsilon",
) -> MDTPipeline:
    """An :class:`MDTPipeline` over a trainer checkpoint's EMA weights, ready for
    ``save_pretrained`` (the sampling weights of a run, in diffusers' folder layout).

    Args:
        path: a checkpoint folder (``OUT/checkpoints/0001000``) or a run folder ``OUT``
            (its newest complete checkpoint).
        vae: the run's ``AutoencoderKL`` for a latent model, ``None`` for pixel space.
        scheduler: a diffusers scheduler; default DDIM over the training betas
            (:func:`~mdtblocks.sampling.make_scheduler`).
        id2label: class names, for names as labels.
        weights_name: ``"ema.safetensors"`` (sampling weights) or ``"model.safetensors"`` (raw).
        noise_schedule: the run's training schedule (for the default scheduler).
        predict: the run's prediction (``"epsilon"``, ``"x0"``, ``"v"``; for the default scheduler).

    Raises:
        FileNotFoundError: for a run folder without a complete checkpoint.
    """
    folder = Path(path)
    if (folder / "checkpoints").is_dir():
        newest = latest_checkpoint(folder)
        if newest is None:
            raise FileNotFoundError(f"{folder} has no complete checkpoint under checkpoints/")
        folder = newest
    model = load_pretrained(folder, weights_name=weights_name)
    if scheduler is None:
        scheduler = make_scheduler("ddim", noise_schedule=noise_schedule, predict=predict,
                                   learn_sigma=model.config.learn_sigma)
    return MDTPipeline(transformer=model, scheduler=scheduler, vae=vae, id2label=id2label)
