"""Gaussian KL and the discretised decoder likelihood: the terms of the variational bound."""

from __future__ import annotations

import math

import torch
from jaxtyping import Float
from torch import Tensor

__all__ = ["mean_flat", "normal_kl", "approx_standard_normal_cdf", "discretized_gaussian_log_likelihood"]


def mean_flat(x: Float[Tensor, "b *rest"]) -> Float[Tensor, "b"]:
    """Mean over every dimension but the batch.

    Args:
        x: any tensor with a leading batch dimension.

    Returns:
        ``(b,)`` per-sample means.
    """
    return x.mean(dim=tuple(range(1, x.ndim))) if x.ndim > 1 else x


def normal_kl(
    mean1: Float[Tensor, "*s"], logvar1: Float[Tensor, "*s"], mean2: Float[Tensor, "*s"], logvar2: Float[Tensor, "*s"]
) -> Float[Tensor, "*s"]:
    """Elementwise ``KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2)))`` in nats.

    Args:
        mean1: mean of the first Gaussian.
        logvar1: log-variance of the first Gaussian.
        mean2: mean of the second Gaussian.
        logvar2: log-variance of the second Gaussian.

    Returns:
        The KL divergence, broadcast over the inputs.
    """
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def approx_standard_normal_cdf(x: Float[Tensor, "*s"]) -> Float[Tensor, "*s"]:
    """The tanh approximation of the standard normal CDF used by DDPM's decoder likelihood.

    Args:
        x: points to evaluate.

    Returns:
        ``Phi(x)`` approximately.
    """
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def discretized_gaussian_log_likelihood(
    x: Float[Tensor, "*s"], *, means: Float[Tensor, "*s"], log_scales: Float[Tensor, "*s"]
) -> Float[Tensor, "*s"]:
    """Log-likelihood (nats) of data quantised to 256 levels in ``[-1, 1]`` under a Gaussian.

    Each value owns the bin ``x +- 1/255``; the two extreme bins extend to infinity
    (Ho et al. 2020, Eq. 13).

    Args:
        x: the data, in ``[-1, 1]``.
        means: Gaussian means.
        log_scales: Gaussian log standard deviations.

    Returns:
        Elementwise log-probabilities.
    """
    if not x.shape == means.shape == log_scales.shape:
        raise ValueError(
            f"x {tuple(x.shape)}, means {tuple(means.shape)} and log_scales {tuple(log_scales.shape)} must match"
        )
    centered = x - means
    inv_std = torch.exp(-log_scales)
    cdf_plus = approx_standard_normal_cdf(inv_std * (centered + 1.0 / 255.0))
    cdf_min = approx_standard_normal_cdf(inv_std * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))
