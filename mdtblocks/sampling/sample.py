"""One call from a model and labels to samples: DDPM, DDIM or DPM-Solver++, with classifier-free guidance."""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from ..diffusion.noise import gaussian_noise
from ..diffusion.schedules import TRAINING_STEPS
from ..objectives.base import Objective
from .guidance import guide

__all__ = ["SAMPLERS", "sample", "check_sampler"]

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
    objective: Objective | None = None,
    guidance_interval: tuple[float, float] | None = None,
    **options: Any,
) -> Float[Tensor, "b c hh ww"]:
    """Sample latents for ``labels`` from a DiT or MDT (e.g. a loaded official checkpoint).

    With ``cfg_scale != 1`` the batch is stacked as ``[cond; uncond]`` (null class
    ``model.config.num_classes``) and the model wrapped for guidance by
    :func:`~mdtblocks.sampling.guidance.guide`, and the conditional half is returned.
    ``x_0`` estimates are not clipped unless ``clip_denoised`` (latents are not bounded
    to ``[-1, 1]``; pixel-space models are).

    Args:
        model: the denoiser; its ``config`` gives channels, size and ``learn_sigma``.
        labels: ``(b,)`` class labels.
        sampler: one of the objective's samplers (Gaussian: :data:`SAMPLERS`).
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
        objective: the objective the model was trained with (e.g. a run's, from
            :func:`~mdtblocks.criterion.read_criterion`); ``None``: the Gaussian diffusion of
            ``noise_schedule``, ``diffusion_steps`` and ``predict``. Its samplers are the ones
            accepted; the guidance schedule follows its ``data_fraction``.
        guidance_interval: ``(lo, hi)``: guide only where the objective's data fraction (flow
            time) lies in ``[lo, hi]`` (:class:`~mdtblocks.objectives.flow.FlowGuidance`).
        **options: further options of the objective's sampler (flow: ``shift``, ``atol``,
            ``rtol``, ``last_step``, ``last_step_size``, ``noise_form``, ``callback``).

    Returns:
        ``(b, c, hh, ww)`` samples (latents for a latent model).
    """
    if objective is None:
        from ..objectives.gaussian import GaussianObjective  # the default family

        objective = GaussianObjective(
            noise_schedule=noise_schedule, diffusion_steps=diffusion_steps, learn_sigma=model.config.learn_sigma,
            predict=predict,
        )
    check_sampler(objective, sampler)
    cfg = model.config
    b = labels.shape[0]
    device = next(model.parameters()).device
    shape = (b, cfg.in_channels, cfg.input_size, cfg.input_size)
    if noise is None:
        noise = gaussian_noise(torch.empty(shape, device=device), generator)
    elif tuple(noise.shape) != shape:
        raise ValueError(f"noise has shape {tuple(noise.shape)}, expected {shape} for this model and {b} labels")
    net, x, y = guide(
        model, noise, labels.to(device), cfg.num_classes, cfg_scale, scale_pow=scale_pow,
        guided_channels=guided_channels, data_fraction=objective.data_fraction, interval=guidance_interval,
    )
    if clip_denoised:
        options["clip_denoised"] = True
    if eta != 0.0:
        options["eta"] = eta
    out = objective.sample(
        net, x, {"y": y}, sampler=sampler, num_steps=num_steps, generator=generator, progress=progress, **options
    )
    return out[:b]


def check_sampler(objective: Objective, sampler: str) -> None:
    """Refuse a sampler of another family: a checkpoint's objective decides which samplers fit it."""
    if sampler not in objective.samplers:
        raise ValueError(
            f"sampler {sampler!r} does not belong to the {objective.kind!r} objective this model was trained with; "
            f"its samplers are {tuple(objective.samplers)}"
        )
