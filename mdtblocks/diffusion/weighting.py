"""Per-timestep weights of the mse term: none, or min-SNR-gamma (Hang et al. 2023)."""

from __future__ import annotations

import math

import torch
from jaxtyping import Float
from torch import Tensor

from .parameterization import PREDICTIONS, check_prediction

__all__ = ["snr", "min_snr_weight"]


def snr(alphas_cumprod: Float[Tensor, "*s"]) -> Float[Tensor, "*s"]:
    """Signal-to-noise ratio ``alpha_bar / (1 - alpha_bar)``.

    Args:
        alphas_cumprod: cumulative alphas.

    Returns:
        The SNR, elementwise.
    """
    return alphas_cumprod / (1.0 - alphas_cumprod)


def min_snr_weight(snr_t: Float[Tensor, "*s"], gamma: float | int, predict: str) -> Float[Tensor, "*s"]:
    """Weight that turns the raw mse of a ``predict`` model into the min-SNR-gamma loss.

    Min-SNR-gamma weights the x0 error ``||x0 - x0_hat||^2`` by ``min(snr, gamma)``.
    The same loss, written in the model's own target, is:

    - epsilon: ``||eps - eps_hat||^2 = snr ||x0 - x0_hat||^2``, weight ``min(snr, gamma) / snr``
      (the official MDTv2 weighting);
    - x0: weight ``min(snr, gamma)``;
    - v: ``||v - v_hat||^2 = (snr + 1) ||x0 - x0_hat||^2``, weight ``min(snr, gamma) / (snr + 1)``.

    Args:
        snr_t: SNR at each sample's timestep.
        gamma: the clamp ``gamma > 0`` (MDTv2: 5).
        predict: ``"epsilon"``, ``"x0"`` or ``"v"``.

    Returns:
        Positive finite weights, same shape as ``snr_t``.
    """
    predict = check_prediction(predict)
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not math.isfinite(gamma) or gamma <= 0:
        raise ValueError(f"snr_gamma must be a positive finite number, got {gamma!r}")
    clamped = torch.clamp(snr_t, max=float(gamma))
    if predict == "epsilon":
        return clamped / snr_t
    if predict == "x0":
        return clamped
    assert predict == "v", PREDICTIONS
    return clamped / (snr_t + 1.0)
