"""A pipeline from a training run: the EMA weights of its newest (or a given) checkpoint."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..models.pretrained import load_pretrained
from ..criterion.record import read_criterion
from ..io import read_json
from ..sampling.schedulers import diffusers_scheduler, make_scheduler
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
    noise_schedule: str | None = None,
    predict: str | None = None,
) -> MDTPipeline:
    """An :class:`MDTPipeline` over a trainer checkpoint's EMA weights, ready for
    ``save_pretrained`` (the sampling weights of a run, in diffusers' folder layout).

    Args:
        path: a checkpoint folder (``OUT/checkpoints/0001000``) or a run folder ``OUT``
            (its newest complete checkpoint).
        vae: the run's ``AutoencoderKL`` for a latent model, ``None`` for pixel space.
        scheduler: a diffusers scheduler; default: the DDIM scheduler of the objective the run
            records in its ``config.json`` (a run without the record, or a bare checkpoint:
            the Gaussian diffusion); an objective without diffusers schedulers is refused.
        id2label: class names, for names as labels.
        weights_name: ``"ema.safetensors"`` (sampling weights) or ``"model.safetensors"`` (raw).
        noise_schedule: overrides the record: DDIM over the Gaussian diffusion of this schedule.
        predict: overrides the record: the prediction (``"epsilon"``, ``"x0"``, ``"v"``) of that DDIM.

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
    if scheduler is None and (noise_schedule is not None or predict is not None):
        scheduler = make_scheduler("ddim", noise_schedule=noise_schedule or "linear", predict=predict or "epsilon",
                                   learn_sigma=model.config.learn_sigma)
    elif scheduler is None:
        run_file = folder / ".." / ".." / "config.json"
        run = read_json(run_file) if run_file.is_file() else {}
        objective = read_criterion({"model_config": model.config.to_dict(), **run}).objective
        scheduler = diffusers_scheduler(objective, "ddim")
    return MDTPipeline(transformer=model, scheduler=scheduler, vae=vae, id2label=id2label)
