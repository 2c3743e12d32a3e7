"""Sample grids during training: EMA samples of fixed classes and noise, so grids compare across checkpoints."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..data import Autoencoder, PixelSpace, grid_scale, save_image_grid
from ..objectives.base import Objective
from ..sampling.guidance import guide
from .config import TrainConfig
from .distributed import Distributed
from .randomness import step_generator

__all__ = ["save_samples", "SampleScore"]

SampleScore = Callable[[Tensor, Tensor], dict[str, float]]
"""``(images in [-1, 1], labels) -> {name: value}``: a score of a sample grid, logged with its step."""


@torch.no_grad()
def save_samples(
    path: Path,
    ema: nn.Module,
    objective: Objective,
    sampler: tuple[str, int],
    autoencoder: Autoencoder,
    cfg: TrainConfig,
    dist: Distributed,
) -> tuple[Tensor, Tensor]:
    """A grid of EMA samples with classes ``0, 1, 2, ...`` and fixed noise, so grids compare across checkpoints.

    ``sampler`` is ``(name, steps)`` of one of ``objective``'s samplers. With
    ``cfg.sample_cfg_scale != 1`` the samples use classifier-free guidance (a constant
    scale). Every rank samples (the EMA may be sharded); rank 0 writes the PNG.

    Returns:
        The decoded images and their labels.
    """
    conf = ema.config
    device = dist.device
    n = cfg.num_samples
    classes = torch.arange(n, device=device) % conf.num_classes
    labels = classes
    generator = step_generator(cfg.seed, "samples", 0)
    noise = torch.randn(n, conf.in_channels, conf.input_size, conf.input_size, generator=generator).to(device)
    scale = cfg.sample_cfg_scale if getattr(ema.y_embedder, "has_null", False) else 1.0
    model, noise, labels = guide(ema, noise, labels, conf.num_classes, scale, data_fraction=objective.data_fraction)
    # Pixel-space samples are clipped to the data range where the sampler can (the Gaussian ones).
    options: dict[str, Any] = {"clip_denoised": True} if isinstance(autoencoder, PixelSpace) else {}
    name, steps = sampler
    latents = objective.sample(
        model, noise, {"y": labels}, sampler=name, num_steps=steps, generator=generator, **options
    )[:n]
    images = autoencoder.decode(latents)
    for module in ema.modules():  # FSDP keeps the root's parameters gathered after a forward without backward
        if hasattr(module, "reshard"):
            module.reshard()
    if dist.is_main:
        # One column per class when the grid holds whole rows of classes (the digits demo: 4 x 10).
        nrow = conf.num_classes if n % conf.num_classes == 0 else None
        # Small images are enlarged (nearest-neighbour) to tiles of at least 96 pixels, so a person can see them.
        save_image_grid(images.float().cpu(), path, nrow=nrow, scale=grid_scale(images.shape[-1]))
    return images, classes
