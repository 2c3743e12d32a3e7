"""One call from a model and labels to samples: DDPM, DDIM or DPM-Solver++, with classifier-free guidance."""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from ..diffusion.factory import create_diffusion
from ..diffusion.noise import gaussian_noise
from ..diffusion.schedules import TRAINING_STEPS
from .guidance import classifier_free_guidance
from .schedulers import diffusers_sample_loop, make_scheduler

__all__ = ["SAMPLERS", "sample"]

SAMPLERS: tuple[str, ...] = ("ddpm", "ddim", "dpm_solver++")
"""``ddpm``: ancestral sampling on the respaced process (the papers use 250 steps);
``ddim``: DDIM on the ``"ddimN"`` respacing; ``dpm_solver++``: diffusers' DPM-Solver++ (2nd order)."""


def sample(
    model: nn.Module,
    labels: Int[Tensor, "b"],
    *,
    sampler: str = "ddpm",
    num_steps: int = 250,
    cfg_scale: float | int = 1.0,
    scale_pow: float | int | None = None,
    guided_channels: int | None = None,
    eta: float | int = 0.0,
    generator: torch.Generator | None = None,
    noise: Float[Tensor, "b c hh ww"] | None = None,
    progress: bool = False,
    noise_schedule: str = "linear",
    diffusion_steps: int = TRAINING_STEPS,
    predict: str = "epsilon",
    clip_denoised: bool = False,
) -> Float[Tensor, "b c hh ww"]:
    """Sample latents for ``labels`` from a DiT or MDT (e.g. a loaded official checkpoint).

    With ``cfg_scale != 1`` the batch is stacked as ``[cond; uncond]`` (null class
    ``model.config.num_classes``), the model is wrapped by
    :func:`~mdtblocks.classifier_free_guidance`, and the conditional half is returned.
    ``x_0`` estimates are not clipped unless ``clip_denoised`` (latents are not bounded
    to ``[-1, 1]``; pixel-space models are).

    Args:
        model: the denoiser; its ``config`` gives channels, size and ``learn_sigma``.
        labels: ``(b,)`` class labels.
        sampler: one of :data:`SAMPLERS`.
        num_steps: sampling steps.
        cfg_scale: guidance scale; 1 samples without guidance.
        scale_pow: MDT's power-cosine schedule power (MDT: 4), or ``None`` for a constant scale.
        guided_channels: channels to guide (``None``: all; 3: the official evaluation).
        eta: DDIM stochasticity.
        generator: source of all noise.
        noise: the initial ``(b, c, hh, ww)`` noise instead of a draw.
        progress: show a progress bar.
        noise_schedule: the training schedule.
        diffusion_steps: training steps.
        predict: the model's prediction type.
        clip_denoised: clip each ``x_0`` estimate to ``[-1, 1]`` (``ddpm`` and ``ddim``; for
            pixel-space models).

    Returns:
        ``(b, c, hh, ww)`` samples (latents for a latent model).
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; expected one of {SAMPLERS}")
    if clip_denoised and sampler == "dpm_solver++":
        raise ValueError("clip_denoised=True is supported by the 'ddpm' and 'ddim' samplers, not 'dpm_solver++'")
    cfg = model.config
    b = labels.shape[0]
    device = next(model.parameters()).device
    shape = (b, cfg.in_channels, cfg.input_size, cfg.input_size)
    if noise is None:
        noise = gaussian_noise(torch.empty(shape, device=device), generator)
    elif tuple(noise.shape) != shape:
        raise ValueError(f"noise has shape {tuple(noise.shape)}, expected {shape} for this model and {b} labels")
    net: Any = model
    y = labels.to(device)
    if cfg_scale != 1.0:
        noise = torch.cat([noise, noise])
        y = torch.cat([y, torch.full_like(y, cfg.num_classes)])
        net = classifier_free_guidance(
            model, cfg_scale, scale_pow=scale_pow, guided_channels=guided_channels, diffusion_steps=diffusion_steps
        )
    kwargs = {"y": y}
    if sampler == "dpm_solver++":
        scheduler = make_scheduler(
            "dpm_solver++",
            noise_schedule=noise_schedule,
            diffusion_steps=diffusion_steps,
            predict=predict,
            learn_sigma=cfg.learn_sigma,
        )
        out = diffusers_sample_loop(net, scheduler, noise.shape, noise, num_steps, kwargs, progress, generator)
    else:
        respacing = f"ddim{num_steps}" if sampler == "ddim" else str(num_steps)
        diffusion = create_diffusion(
            respacing, noise_schedule, diffusion_steps, learn_sigma=cfg.learn_sigma, predict=predict
        )
        if sampler == "ddim":
            out = diffusion.ddim_sample_loop(net, noise.shape, noise, clip_denoised, kwargs, eta, progress, generator)
        else:
            out = diffusion.p_sample_loop(net, noise.shape, noise, clip_denoised, kwargs, progress, generator)
    return out[:b]
