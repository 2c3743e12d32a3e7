"""EDM's noise levels: the log-normal training distribution and the rho-spaced sampling schedule (Karras et al. 2022, eq. 5)."""

from __future__ import annotations

import math

import torch
from jaxtyping import Float
from torch import Tensor

__all__ = ["karras_sigmas", "log_normal_sigmas", "sigma_ramp"]


def _positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def karras_sigmas(
    num_steps: int,
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    rho: float = 7.0,
    *,
    device: torch.device | str | None = None,
) -> Float[Tensor, "steps_plus_one"]:
    """``num_steps`` noise levels from ``sigma_max`` down to ``sigma_min``, then a final 0 (float64).

    Level ``i`` is ``(sigma_max^(1/rho) + i / (N - 1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho``:
    uniform in ``sigma^(1/rho)``, so a larger ``rho`` spends more steps at low noise
    (EDM eq. 5; ``rho = 7``).

    Raises:
        ValueError: ``num_steps < 2``, a non-positive level or ``rho``, or ``sigma_min >= sigma_max``.
    """
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 2:
        raise ValueError(f"num_steps must be an int of at least 2, got {num_steps!r}")
    lo, hi, r = _positive("sigma_min", sigma_min), _positive("sigma_max", sigma_max), _positive("rho", rho)
    if lo >= hi:
        raise ValueError(f"sigma_min {lo} must be below sigma_max {hi}")
    i = torch.arange(num_steps, dtype=torch.float64, device=device)
    sigmas = (hi ** (1 / r) + i / (num_steps - 1) * (lo ** (1 / r) - hi ** (1 / r))) ** r
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def sigma_ramp(sigma: Float[Tensor, "b"], sigma_min: float, sigma_max: float, rho: float) -> Float[Tensor, "b"]:
    """Where ``sigma`` lies on the rho schedule, in ``[0, 1]``: 0 at ``sigma_max``, 1 at ``sigma_min`` and below.

    The inverse of :func:`karras_sigmas`' ramp (step ``i`` of ``N`` maps to ``i / (N - 1)``),
    clipped to ``[0, 1]``; levels above ``sigma_max`` map to 0.
    """
    lo, hi, r = _positive("sigma_min", sigma_min), _positive("sigma_max", sigma_max), _positive("rho", rho)
    s = sigma.clamp(min=0.0)
    return ((s ** (1 / r) - hi ** (1 / r)) / (lo ** (1 / r) - hi ** (1 / r))).clamp(0.0, 1.0)


def log_normal_sigmas(
    n: int, p_mean: float, p_std: float, generator: torch.Generator
) -> Float[Tensor, "n"]:
    """``n`` training noise levels with ``ln(sigma) ~ N(p_mean, p_std^2)`` (EDM Section 5; -1.2 and 1.2), on ``generator``'s device."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    normal = torch.randn(n, generator=generator, device=generator.device)
    return (normal * p_std + p_mean).exp()
