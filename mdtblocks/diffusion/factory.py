"""``create_diffusion``: the official factory, with prediction type and min-SNR weighting added."""

from __future__ import annotations

import torch

from .gaussian import GaussianDiffusion
from .process import check_prediction
from .respace import respace_betas, space_timesteps
from .schedules import TRAINING_STEPS, named_betas

__all__ = ["create_diffusion"]


def create_diffusion(
    timestep_respacing: str | int | list[int] | None = "",
    noise_schedule: str = "linear",
    diffusion_steps: int = TRAINING_STEPS,
    learn_sigma: bool = True,
    predict: str = "epsilon",
    snr_gamma: float | int | None = None,
    *,
    sigma_small: bool = False,
    use_kl: bool = False,
    rescale_learned_sigmas: bool = False,
) -> GaussianDiffusion:
    """Build the diffusion of DiT, MDT and MDTv2 (defaults: 1000 linear steps, epsilon, learned range).

    The defaults reproduce the official ``create_diffusion(timestep_respacing="")``
    used for training; sampling uses a respaced copy such as ``"250"`` (DDPM, the
    papers' protocol) or ``"ddim50"``. MDTv2 trains with ``snr_gamma=5``.

    Args:
        timestep_respacing: ``""`` or ``None`` for all steps, else see
            :func:`~mdtblocks.diffusion.space_timesteps` (``"250"``, ``"ddim50"``, ``"10,15,20"``);
            an int ``N`` means ``"N"``.
        noise_schedule: ``"linear"`` or ``"cosine"``.
        diffusion_steps: steps ``T`` of the training process.
        learn_sigma: the model outputs learned-range variance channels; otherwise the
            variance is fixed (large, or small with ``sigma_small``).
        predict: ``"epsilon"``, ``"x0"`` or ``"v"``.
        snr_gamma: min-SNR-gamma weighting of the mse term, or ``None``.
        sigma_small: with a fixed variance, use the posterior variance instead of beta.
        use_kl: train on the variational bound alone (rescaled to the full bound).
        rescale_learned_sigmas: scale the vb term by ``T / 1000``.

    Returns:
        The :class:`~mdtblocks.diffusion.GaussianDiffusion`.

    Raises:
        ValueError: for an unknown schedule, prediction or respacing.
    """
    predict = check_prediction(predict)
    betas = named_betas(noise_schedule, diffusion_steps)
    if isinstance(timestep_respacing, int) and not isinstance(timestep_respacing, bool):
        timestep_respacing = str(timestep_respacing)
    if timestep_respacing is None or timestep_respacing == "":
        timestep_respacing = [diffusion_steps]
    kept = space_timesteps(diffusion_steps, timestep_respacing)
    new_betas, timestep_map = respace_betas(torch.cumprod(1.0 - betas, dim=0), kept)
    if use_kl:
        loss_type = "rescaled_kl"
    elif rescale_learned_sigmas:
        loss_type = "rescaled_mse"
    else:
        loss_type = "mse"
    variance_type = "learned_range" if learn_sigma else ("fixed_small" if sigma_small else "fixed_large")
    return GaussianDiffusion(
        new_betas,
        predict=predict,
        variance_type=variance_type,
        loss_type=loss_type,
        snr_gamma=snr_gamma,
        timestep_map=timestep_map,
        original_num_steps=diffusion_steps,
    )
