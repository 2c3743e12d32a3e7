"""EDM's deterministic Heun sampler with optional stochastic churn (Karras et al. 2022, Algorithm 2)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

__all__ = ["heun_sampler", "ChurnOptions", "EDMCallback"]

Image = Float[Tensor, "b c hh ww"]
EDMCallback = Callable[[dict[str, Any]], None]
"""Called after every step with ``{"i", "sigma", "sigma_hat", "x", "denoised"}``."""


@dataclass(frozen=True)
class ChurnOptions:
    """EDM's stochasticity: at levels in ``[s_min, s_max]`` the noise is raised by
    ``gamma = min(s_churn / N, sqrt(2) - 1)`` before each step (Algorithm 2, lines 4-6).

    Attributes:
        s_churn: total churn ``S_churn`` (0: the deterministic sampler).
        s_min: lowest level that is churned.
        s_max: highest level that is churned.
        s_noise: scale of the added noise (``S_noise``; slightly above 1 offsets detail loss).
    """

    s_churn: float = 0.0
    s_min: float = 0.0
    s_max: float = math.inf
    s_noise: float = 1.0

    def __post_init__(self) -> None:
        for name, value in (("S_churn", self.s_churn), ("S_min", self.s_min), ("S_max", self.s_max), ("S_noise", self.s_noise)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or value < 0:
                raise ValueError(f"{name} must be a non-negative number, got {value!r}")
        if self.s_min > self.s_max:
            raise ValueError(f"S_min {self.s_min} must not exceed S_max {self.s_max}")

    def gamma(self, sigma: float, num_steps: int) -> float:
        """The noise increase factor at level ``sigma`` in an ``num_steps``-step run."""
        if self.s_churn == 0 or not self.s_min <= sigma <= self.s_max:
            return 0.0
        return min(self.s_churn / num_steps, math.sqrt(2) - 1)


def heun_sampler(
    denoiser: Callable[..., Image],
    x: Image,
    sigmas: Float[Tensor, "steps_plus_one"],
    extra_args: dict[str, Any] | None = None,
    callback: EDMCallback | None = None,
    disable: bool = True,
    *,
    churn: ChurnOptions | None = None,
    generator: torch.Generator | None = None,
    noise_fn: Callable[[Tensor, int], Tensor] | None = None,
    second_order: bool = True,
) -> Image:
    """Integrate the probability-flow ODE ``dx/dsigma = (x - D(x; sigma)) / sigma`` down ``sigmas``.

    Each step goes from ``sigmas[i]`` to ``sigmas[i + 1]``: an Euler step, then (except
    into the final ``sigma = 0``) Heun's trapezoidal correction; with ``churn`` the
    level is first raised to ``sigma_hat = (1 + gamma) sigma`` by adding fresh noise.
    The state is kept in float64 and the denoiser is called in float32 with a float32
    level per sample (the reference implementation's precisions).

    Args:
        denoiser: ``D(x, sigma, **extra_args)``, e.g. an :class:`~mdtblocks.objectives.edm.EDMDenoiser`.
        x: the starting point, already at ``sigmas[0]`` (noise times ``sigmas[0]``).
        sigmas: decreasing levels ending in 0 (:func:`~mdtblocks.objectives.edm.karras_sigmas`).
        extra_args: keyword arguments for the denoiser (labels ``y``, ...).
        callback: called after every step (see :data:`EDMCallback`).
        disable: hide the progress bar.
        churn: stochastic churn; ``None`` for the deterministic sampler.
        generator: draws the churn noise (standard normal, like ``x``).
        noise_fn: draws the churn noise instead of ``generator``: ``noise_fn(x, i)`` returns
            a standard normal tensor like ``x`` for step ``i`` (called only at churned steps); for injected noise.
        second_order: Heun (true) or plain Euler steps.

    Returns:
        The sample at ``sigmas[-1]``, in ``x``'s dtype.

    Raises:
        ValueError: ``sigmas`` is not a decreasing 1-D sequence of at least two levels ending in 0.
    """
    if not isinstance(sigmas, Tensor) or sigmas.ndim != 1 or sigmas.shape[0] < 2:
        raise ValueError(f"sigmas must be a 1-D tensor of at least 2 levels, got {getattr(sigmas, 'shape', sigmas)!r}")
    levels = [float(s) for s in sigmas]
    if levels[-1] != 0 or any(a <= b for a, b in zip(levels[:-1], levels[1:])) or levels[-2] <= 0:
        raise ValueError(f"sigmas must decrease strictly to a final 0, got {levels}")
    extra_args = dict(extra_args or {})
    num_steps = len(levels) - 1
    draw = noise_fn or (lambda like, i: torch.randn(like.shape, generator=generator, dtype=like.dtype, device=like.device))
    b = x.shape[0]
    out_dtype = x.dtype

    def d(state: Tensor, sigma: float) -> Tensor:
        level = torch.full((b,), sigma, dtype=torch.float32, device=state.device)
        return denoiser(state.float(), level, **extra_args).to(torch.float64)

    steps: Iterable[int] = range(num_steps)
    if not disable:
        from tqdm.auto import tqdm

        steps = tqdm(steps, total=num_steps)
    x_next = x.to(torch.float64)
    for i in steps:
        s_cur, s_next = levels[i], levels[i + 1]
        x_cur = x_next
        gamma = churn.gamma(s_cur, num_steps) if churn is not None else 0.0
        s_hat = s_cur + gamma * s_cur
        x_hat = x_cur
        if gamma > 0:
            x_hat = x_cur + math.sqrt(s_hat**2 - s_cur**2) * churn.s_noise * draw(x_cur, i)  # type: ignore[union-attr]
        with torch.no_grad():
            denoised = d(x_hat, s_hat)
            slope = (x_hat - denoised) / s_hat
            x_next = x_hat + (s_next - s_hat) * slope
            if second_order and s_next > 0:
                denoised_next = d(x_next, s_next)
                slope_next = (x_next - denoised_next) / s_next
                x_next = x_hat + (s_next - s_hat) * (0.5 * slope + 0.5 * slope_next)
        if callback is not None:
            callback({"i": i, "sigma": s_cur, "sigma_hat": s_hat, "x": x_next, "denoised": denoised})
    return x_next.to(out_dtype)
