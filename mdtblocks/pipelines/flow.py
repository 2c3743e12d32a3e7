"""Flow-matching sampling inside :class:`~mdtblocks.MDTPipeline`: diffusers' ``FlowMatchEulerDiscreteScheduler`` over the objective's velocity.

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
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from ..objectives.base import objective_from_record

__all__ = ["objective_of", "flow_denoise"]


def objective_of(record: Mapping[str, Any], scheduler: Any) -> Any:
    """The flow objective a pipeline's config records, checked against its scheduler.

    Raises:
        ValueError: for a record that is not flow matching, or a scheduler that is not diffusers'
            ``FlowMatchEulerDiscreteScheduler`` (a Gaussian scheduler would sample a flow model with the wrong math).
    """
    objective = objective_from_record(record)
    if objective.kind != "flow":
        raise ValueError(f"the pipeline records a {objective.kind!r} objective; only flow matching is sampled this way")
    if type(scheduler).__name__ != "FlowMatchEulerDiscreteScheduler":
        raise ValueError(
            f"this pipeline's model was trained with flow matching, but its scheduler is {type(scheduler).__name__}; "
            "use diffusers' FlowMatchEulerDiscreteScheduler (FlowMatching().diffusers_scheduler())"
        )
    return objective


def flow_denoise(
    objective: Any,
    scheduler: Any,
    net: Callable[..., Tensor],
    x: Float[Tensor, "b c hh ww"],
    y: Int[Tensor, "b"],
    num_inference_steps: int,
    progress_bar: Callable[[Any], Any] = iter,
    **step_kwargs: Any,
) -> Float[Tensor, "b c hh ww"]:
    """Integrate noise ``x`` to data with ``scheduler`` (a ``FlowMatchEulerDiscreteScheduler``) over ``objective``'s velocity."""
    velocity = objective.velocity(net)
    t0, t1 = objective.interval(eval=True)  # (0, 1) unless sample_eps shortens it
    scheduler.set_timesteps(num_inference_steps, device=x.device)
    sigmas = scheduler.sigmas.to(x.device)
    for i, t in enumerate(progress_bar(scheduler.timesteps)):
        flow_t = (t0 + (t1 - t0) * (1 - sigmas[i])).to(torch.float32).expand(x.shape[0])
        v = velocity(x, flow_t, y=y)
        x = scheduler.step((-(t1 - t0) * v).to(x.dtype), t, x, **step_kwargs).prev_sample
    return x
