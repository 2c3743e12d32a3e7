"""Reverse-time SDE samplers (Euler-Maruyama, stochastic Heun) and their last steps, SiT's way.

The sampling SDE shares the ODE's marginals (SiT, Ma et al. 2024, Sec. 2.3):

``dx = [v(x, t) + c w(t) s(x, t)] dt + sqrt(2 c w(t)) dW``

with ``v`` the velocity, ``s`` the score and ``w(t)`` a diffusion coefficient of a chosen
form (:data:`~mdtblocks.objectives.flow.paths.DIFFUSION_FORMS`). SiT's code uses
``c = 1`` (noise ``sqrt(2 w dt)``) while its paper writes ``c = 1/2`` (noise
``sqrt(w dt)``, drift ``v + w s / 2``); SiT issue #14. Both have the same marginals for
any ``w`` (the paper's form is the code's with ``w`` halved). mdtblocks' default is the
code's form, ``noise_form="code"``: it is what produced SiT's reported numbers and what
its checkpoints were evaluated with. ``noise_form="paper"`` gives the paper's.

Brownian increments come from ``noise(x)`` (standard normal shaped like ``x``), so that
tests and parity checks can inject them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from .ode import Callback, VelocityFn

__all__ = ["SDE_METHODS", "LAST_STEPS", "NOISE_FORMS", "NoiseFn", "DiffusionFn", "sde_sample", "noise_factor"]

SDE_METHODS = ("Euler", "Heun")
"""SDE integrators: Euler-Maruyama and SiT's stochastic Heun."""

LAST_STEPS = (None, "Mean", "Tweedie", "Euler")
"""The final, noise-free step from ``1 - last_step_size`` to data (``None``: stop there)."""

NOISE_FORMS = ("code", "paper")
"""``"code"``: SiT's code, noise ``sqrt(2 w dt)`` (default); ``"paper"``: SiT's paper, ``sqrt(w dt)``."""

NoiseFn = Callable[[Tensor], Tensor]
"""``noise(x)``: a standard normal draw shaped like ``x`` (the Brownian increment before scaling)."""

DiffusionFn = Callable[[Tensor, Tensor], Any]
"""``diffusion(x, t)``: the coefficient ``w(t)``, broadcastable against ``x``."""


def noise_factor(noise_form: str) -> float:
    """The constant ``c`` of the module's SDE for a noise form (1 for ``"code"``, 1/2 for ``"paper"``).

    Raises:
        ValueError: for an unknown form.
    """
    if noise_form not in NOISE_FORMS:
        raise ValueError(f"unknown SDE noise form {noise_form!r}; expected one of {NOISE_FORMS}")
    return 1.0 if noise_form == "code" else 0.5


def sde_sample(
    drift: VelocityFn,
    diffusion: DiffusionFn,
    x: Float[Tensor, "b c hh ww"],
    times: Float[Tensor, "n"],
    *,
    method: str = "Euler",
    noise: NoiseFn,
    uniform: bool = True,
    model_kwargs: Mapping[str, Any] | None = None,
    callback: Callback | None = None,
) -> Float[Tensor, "b c hh ww"]:
    """Integrate ``dx = drift(x, t) dt + sqrt(2 w(t)) dW`` along ``times``; return the state at ``times[-1]``.

    Args:
        drift: the SDE drift ``v + w s`` (already including the score term).
        diffusion: ``w(x, t)`` (already including the noise form's factor).
        x: the start state (noise).
        times: an increasing grid; one step per interval.
        method: ``"Euler"`` (Euler-Maruyama) or ``"Heun"`` (noise first, then a Heun step of
            the drift, as SiT's integrator).
        noise: the source of Brownian increments.
        uniform: the grid is evenly spaced: every step uses ``dt = times[1] - times[0]``
            (SiT's arithmetic); otherwise each step its own interval (shifted grids).
        model_kwargs: extra arguments of ``drift``.
        callback: called after each step with ``{"i", "t", "x", "mean"}`` (``mean``: the
            state before the step's noise was added, for Euler-Maruyama).

    Raises:
        ValueError: for an unknown method or a grid that is not increasing.
    """
    if method not in SDE_METHODS:
        raise ValueError(f"unknown SDE method {method!r}; expected one of {SDE_METHODS}")
    if times.dim() != 1 or times.numel() < 2 or not bool((times[1:] > times[:-1]).all()):
        raise ValueError("an SDE sampler runs forward in time (noise to data): times must increase")
    kwargs = dict(model_kwargs or {})
    b = x.size(0)
    steps = times[1:] - times[:-1]
    for i in range(len(times) - 1):
        dt = steps[0] if uniform else steps[i]
        t = torch.ones(b).to(x) * times[i]
        dw = noise(x) * torch.sqrt(dt)
        # SiT's integrator takes sqrt of w directly, which fails for the "constant" form's plain number.
        w = torch.as_tensor(diffusion(x, t), dtype=x.dtype, device=x.device)
        if method == "Euler":
            mean = x + drift(x, t, **kwargs) * dt
            x = mean + torch.sqrt(2 * w) * dw
        else:
            mean = x + torch.sqrt(2 * w) * dw
            k1 = drift(mean, t, **kwargs)
            k2 = drift(mean + dt * k1, t + dt, **kwargs)
            x = mean + 0.5 * dt * (k1 + k2)
        if callback is not None:
            callback({"i": i, "t": times[i + 1], "x": x, "mean": mean})
    return x
