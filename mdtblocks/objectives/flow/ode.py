"""Probability-flow ODE samplers over a velocity field: Euler, Heun, and adaptive dopri5 (torchdiffeq).

All samplers integrate ``dx/dt = v(x, t)`` along a given time grid. Forward grids run
from noise (t near 0) to data (t near 1); a decreasing grid runs the reverse ODE, data
to noise (SiT's ``reverse=True``). Fixed-step methods take one step per grid interval;
dopri5 steps adaptively and reports the solution at the grid points.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from .times import check_times, shift_times

__all__ = ["ODE_METHODS", "VelocityFn", "Callback", "time_grid", "ode_sample"]

ODE_METHODS = ("euler", "heun", "dopri5")
"""Names of the ODE samplers."""

VelocityFn = Callable[..., Float[Tensor, "b c hh ww"]]
"""``velocity(x, t, **model_kwargs)`` with ``t`` of shape ``(b,)``: the drift of the ODE."""

Callback = Callable[[dict[str, Any]], None]
"""Called after each step with ``{"i": step index, "t": time reached, "x": state}``."""


def time_grid(
    t0: float, t1: float, points: int, *, shift: float | None = None, device: torch.device | str | None = None
) -> Float[Tensor, "n"]:
    """``points`` times from ``t0`` to ``t1`` (``torch.linspace`` as SiT, then :func:`shift_times`).

    Raises:
        ValueError: for fewer than 2 points or ends outside ``[0, 1]``.
    """
    if isinstance(points, bool) or not isinstance(points, int) or points < 2:
        raise ValueError(f"a time grid needs at least 2 points (1 step), got {points!r}")
    grid = torch.linspace(t0, t1, points)
    check_times(grid, "the sampling interval")
    return shift_times(grid, shift).to(device)


def ode_sample(
    velocity: VelocityFn,
    x: Float[Tensor, "b c hh ww"],
    times: Float[Tensor, "n"],
    *,
    method: str = "euler",
    atol: float = 1e-6,
    rtol: float = 1e-3,
    model_kwargs: Mapping[str, Any] | None = None,
    callback: Callback | None = None,
) -> Float[Tensor, "b c hh ww"]:
    """Integrate ``dx/dt = velocity(x, t)`` from ``times[0]`` to ``times[-1]``; return the end state.

    Args:
        velocity: the drift ``velocity(x, t, **model_kwargs)``.
        x: the start state (noise for a forward grid, data for a reverse one).
        times: the grid (see :func:`time_grid`); monotone.
        method: ``"euler"``, ``"heun"`` (explicit trapezoid, 2 evaluations a step) or
            ``"dopri5"`` (adaptive, through ``torchdiffeq.odeint`` with ``atol``/``rtol``).
        atol: absolute tolerance (dopri5 only).
        rtol: relative tolerance (dopri5 only).
        model_kwargs: extra arguments of ``velocity``.
        callback: called after each step (dopri5: at each grid point).

    Returns:
        The state at ``times[-1]``.

    Raises:
        ValueError: for an unknown method or a grid of fewer than 2 points.
    """
    if method not in ODE_METHODS:
        raise ValueError(f"unknown ODE method {method!r}; expected one of {ODE_METHODS}")
    if times.dim() != 1 or times.numel() < 2:
        raise ValueError(f"times must be a 1-D grid of at least 2 points, got shape {tuple(times.shape)}")
    kwargs = dict(model_kwargs or {})
    times = times.to(x.device)
    b = x.size(0)

    def f(x: Tensor, t: Tensor) -> Tensor:
        # SiT's integrator: th.ones(b) * t, one time per sample.
        return velocity(x, torch.ones(b, device=x.device) * t, **kwargs)

    if method == "dopri5":
        from torchdiffeq import odeint

        # SiT passes the tolerances as one-element lists; kept so that dopri5's steps match it exactly.
        states = odeint(lambda t, y: f(y, t), x, times, method="dopri5", atol=[atol], rtol=[rtol])
        if callback is not None:
            for i in range(1, len(times)):
                callback({"i": i - 1, "t": times[i], "x": states[i]})
        return states[-1]
    for i in range(len(times) - 1):
        t_cur, t_next = times[i], times[i + 1]
        dt = t_next - t_cur
        v = f(x, t_cur)
        if method == "euler":
            x = x + dt * v
        else:
            v_next = f(x + dt * v, t_next)
            x = x + dt * (0.5 * v + 0.5 * v_next)
        if callback is not None:
            callback({"i": i, "t": t_next, "x": x})
    return x
