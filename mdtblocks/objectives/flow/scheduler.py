"""Flow matching with diffusers' ``FlowMatchEulerDiscreteScheduler``: the loop that :class:`~mdtblocks.MDTPipeline` runs.

Conventions: the objective's time ``t`` is 0 at noise and 1 at data (SiT); diffusers' flow
schedulers use the noise level ``sigma = 1 - t`` and step ``x + (sigma_next - sigma) * out``.
So the network is called at ``t = 1 - sigma`` and the step gets ``out = -v``, where ``v`` is
the objective's probability-flow velocity (:meth:`~mdtblocks.objectives.flow.FlowMatching.velocity`,
any path and prediction). The result is the Euler ODE on diffusers' sigma grid. An objective
that samples over ``[t0, t1]`` (a positive ``sample_eps``) maps the grid linearly onto it:
``t = t0 + (t1 - t0)(1 - sigma)`` and ``out = -(t1 - t0) v``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from torch import Tensor

if TYPE_CHECKING:
    from .transport import FlowMatching

__all__ = ["SCHEDULER_CLASS", "check_flow_scheduler", "scheduler_sample"]

SCHEDULER_CLASS = "FlowMatchEulerDiscreteScheduler"
"""The diffusers scheduler a flow model samples with (its class name)."""


def check_flow_scheduler(scheduler: Any) -> None:
    """Refuse a scheduler other than diffusers' ``FlowMatchEulerDiscreteScheduler`` (a Gaussian one would sample
    a flow model with the wrong math).

    Raises:
        ValueError: for another scheduler.
    """
    if type(scheduler).__name__ != SCHEDULER_CLASS:
        raise ValueError(
            f"this pipeline's model was trained with flow matching, but its scheduler is {type(scheduler).__name__}; "
            f"use diffusers' {SCHEDULER_CLASS} (FlowMatching().diffusers_scheduler())"
        )


def scheduler_sample(
    objective: FlowMatching,
    scheduler: Any,
    net: Callable[..., Tensor],
    noise: Float[Tensor, "b c hh ww"],
    model_kwargs: Mapping[str, Any],
    num_steps: int,
    progress_bar: Callable[[Any], Any] = iter,
    **step_kwargs: Any,
) -> Float[Tensor, "b c hh ww"]:
    """Integrate ``noise`` to data with ``scheduler`` (``FlowMatchEulerDiscreteScheduler``) over ``objective``'s velocity."""
    check_flow_scheduler(scheduler)
    velocity = objective.velocity(net)
    t0, t1 = objective.interval(eval=True)  # (0, 1) unless sample_eps shortens it
    scheduler.set_timesteps(num_steps, device=noise.device)
    sigmas = scheduler.sigmas.to(noise.device)
    x = noise
    for i, t in enumerate(progress_bar(scheduler.timesteps)):
        flow_t = (t0 + (t1 - t0) * (1 - sigmas[i])).to(torch.float32).expand(x.shape[0])
        v = velocity(x, flow_t, **model_kwargs)
        x = scheduler.step((-(t1 - t0) * v).to(x.dtype), t, x, **step_kwargs).prev_sample
    return x
