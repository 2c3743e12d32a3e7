"""The diffusion process: schedules, respacing, the Gaussian process, losses and weightings."""

from .bpd import calc_bpd_loop, prior_bpd
from .factory import create_diffusion
from .gaussian import GaussianDiffusion
from .likelihood import discretized_gaussian_log_likelihood, mean_flat, normal_kl
from .losses import losses_from_output, training_losses, vb_terms_bpd
from .noise import gaussian_noise
from .loops import ddim_sample_loop, p_sample_loop
from .process import (
    LOSS_TYPES,
    PREDICTIONS,
    VARIANCE_TYPES,
    GaussianProcess,
    Tables,
    check_prediction,
    fp32_math,
    min_snr_weight,
    snr,
)
from .respace import respace_betas, space_timesteps
from .schedules import SCHEDULES, TRAINING_STEPS, betas_for_alpha_bar, cosine_betas, linear_betas, named_betas

__all__ = [
    "create_diffusion",
    "GaussianDiffusion",
    "GaussianProcess",
    "Tables",
    "p_sample_loop",
    "ddim_sample_loop",
    "fp32_math",
    "LOSS_TYPES",
    "PREDICTIONS",
    "SCHEDULES",
    "TRAINING_STEPS",
    "VARIANCE_TYPES",
    "space_timesteps",
    "respace_betas",
    "linear_betas",
    "cosine_betas",
    "betas_for_alpha_bar",
    "named_betas",
    "training_losses",
    "losses_from_output",
    "vb_terms_bpd",
    "calc_bpd_loop",
    "prior_bpd",
    "normal_kl",
    "discretized_gaussian_log_likelihood",
    "mean_flat",
    "gaussian_noise",
    "check_prediction",
    "min_snr_weight",
    "snr",
]


def __getattr__(name: str) -> object:
    """``MaskedDiffusionObjective`` and ``StepRandomness`` moved to :mod:`mdtblocks.criterion`; found there on first use."""
    if name in ("MaskedDiffusionObjective", "StepRandomness"):
        from .. import criterion

        return getattr(criterion, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
