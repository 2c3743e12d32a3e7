"""Noise schedules: the betas of a discrete diffusion process, built in float64."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from jaxtyping import Float
from torch import Tensor

__all__ = ["SCHEDULES", "TRAINING_STEPS", "linear_betas", "cosine_betas", "betas_for_alpha_bar", "named_betas"]

TRAINING_STEPS = 1000
"""Steps of the training process of DDPM, ADM, DiT, MDT and MDTv2 (the default everywhere)."""

SCHEDULES: tuple[str, ...] = ("linear", "cosine")
"""Names accepted by :func:`named_betas` (``"squaredcos_cap_v2"`` is an alias of ``"cosine"``)."""

_ALIASES = {"squaredcos_cap_v2": "cosine"}


def linear_betas(num_steps: int) -> Float[Tensor, "T"]:
    """Linear betas of Ho et al. (2020), rescaled so that any step count spans the same process.

    With 1000 steps this is ``linspace(1e-4, 0.02, 1000)``, the schedule of DDPM,
    ADM, DiT, MDT and MDTv2; with ``T`` steps both ends are multiplied by ``1000 / T``.

    Args:
        num_steps: number of diffusion steps ``T``.

    Returns:
        ``(T,)`` float64 betas.

    Raises:
        ValueError: for fewer than 20 steps, where betas would exceed 1.
    """
    _check_steps(num_steps)
    if num_steps < 20:
        raise ValueError(f"the linear schedule needs at least 20 steps (its last beta is 20 / T), got {num_steps}")
    scale = 1000.0 / num_steps  # Ho et al. defined the betas for 1000 steps
    return torch.linspace(scale * 1e-4, scale * 0.02, num_steps, dtype=torch.float64)


def betas_for_alpha_bar(
    num_steps: int, alpha_bar: Callable[[float], float], max_beta: float | int = 0.999
) -> Float[Tensor, "T"]:
    """Discretise a continuous ``alpha_bar(s)``, ``s`` in ``[0, 1]``, into ``T`` betas.

    Step ``i`` gets ``beta_i = 1 - alpha_bar((i + 1) / T) / alpha_bar(i / T)``, capped at
    ``max_beta`` so that the last steps stay invertible (Nichol & Dhariwal 2021, Sec. 3.2).

    Args:
        num_steps: number of diffusion steps ``T``.
        alpha_bar: cumulative signal fraction as a function of continuous time.
        max_beta: upper bound of each beta.

    Returns:
        ``(T,)`` float64 betas.
    """
    _check_steps(num_steps)
    betas = [min(1.0 - alpha_bar((i + 1) / num_steps) / alpha_bar(i / num_steps), max_beta) for i in range(num_steps)]
    return torch.tensor(betas, dtype=torch.float64)


def cosine_betas(num_steps: int) -> Float[Tensor, "T"]:
    """Cosine schedule of improved DDPM: ``alpha_bar(s) = cos^2(pi/2 (s + 0.008) / 1.008)``.

    Args:
        num_steps: number of diffusion steps ``T``.

    Returns:
        ``(T,)`` float64 betas (the official ``"squaredcos_cap_v2"``).
    """
    return betas_for_alpha_bar(num_steps, lambda s: math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2)


def named_betas(name: str, num_steps: int) -> Float[Tensor, "T"]:
    """Betas of a schedule given by name.

    Args:
        name: one of :data:`SCHEDULES`.
        num_steps: number of diffusion steps ``T``.

    Returns:
        ``(T,)`` float64 betas.

    Raises:
        ValueError: for an unknown name or a non-positive step count.
    """
    key = _ALIASES.get(name, name) if isinstance(name, str) else name
    if key == "linear":
        return linear_betas(num_steps)
    if key == "cosine":
        return cosine_betas(num_steps)
    raise ValueError(f"unknown noise schedule {name!r}; expected one of {SCHEDULES}")


def _check_steps(num_steps: int) -> None:
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"the number of diffusion steps must be a positive int, got {num_steps!r}")
