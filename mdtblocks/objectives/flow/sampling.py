"""The flow samplers' options as a sampling command offers them (``recipes/sample.py``): :data:`FLOW_SAMPLING`.

Without ``--sampler`` a flow run gets SiT's evaluation: the SDE with Euler steps, 250 of
them, last step ``Mean`` of 0.04. Each option names the keyword of
:meth:`~mdtblocks.objectives.flow.FlowMatching.sample` it sets (or
:func:`mdtblocks.sampling.sample`'s ``guidance_interval``) and the samplers that read it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from ..sampling_spec import SamplerOption, SamplingSpec

__all__ = ["FLOW_SAMPLING"]

SDE = ("sde_euler", "sde_heun")


def _positive(flag: str) -> Any:
    def check(value: Any, flags: Mapping[str, Any]) -> str | None:
        return None if value is None or value > 0 else f"{flag} must be positive, got {value}"

    return check


def _last_step_size(value: float, flags: Mapping[str, Any]) -> str | None:
    return None if 0 <= value < 1 else f"--last-step-size {value} must lie in [0, 1)"


def _guidance_interval(value: tuple[float, ...], flags: Mapping[str, Any]) -> str | None:
    if not value:
        return None
    if len(value) != 2 or not 0 <= value[0] <= 1 or not 0 <= value[1] <= 1:
        return f"--guidance-interval {' '.join(map(str, value))}: expected two flow times LO HI in [0, 1]"
    if value[0] > value[1]:
        return f"--guidance-interval {value[0]} {value[1]} is reversed: expected LO <= HI"
    if flags.get("scale_pow"):
        return "--guidance-interval and --scale-pow are two guidance schedules; give one"
    return None


FLOW_SAMPLING = SamplingSpec(
    default_sampler="sde_euler",
    default_steps=250,
    pipeline_scheduler="euler",
    options=(
        SamplerOption("atol", float, 1e-6, "dopri5 absolute tolerance (flow runs)", samplers=("dopri5",),
                      check=_positive("--atol")),
        SamplerOption("rtol", float, 1e-3, "dopri5 relative tolerance (flow runs)", samplers=("dopri5",),
                      check=_positive("--rtol")),
        SamplerOption("last_step", Literal["Mean", "Tweedie", "Euler", "none"], "Mean",
                      "last step of the SDE samplers (flow runs)", samplers=SDE,
                      convert=lambda v: None if v == "none" else v),
        SamplerOption("last_step_size", float, 0.04, "length in time of the SDE's last step (flow runs)", samplers=SDE,
                      check=_last_step_size),
        SamplerOption("sde_noise", Literal["code", "paper"], "code",
                      "SDE noise scale: sqrt(2 w dt) as SiT's code (reproduces its numbers) or sqrt(w dt) as its paper "
                      "(flow runs)", keyword="noise_form", samplers=SDE),
        SamplerOption("time_shift", float | None, None,
                      "shift of the flow time grid towards noise (SD3, LightningDiT); none: no shift (flow runs)",
                      keyword="shift", check=_positive("--time-shift")),
        SamplerOption("guidance_interval", tuple[float, ...], (),
                      "guide only for flow times t in [LO, HI] (0 noise, 1 data), e.g. 0.1 1.0; none given: every step "
                      "(flow runs)", convert=lambda v: tuple(v) or None, check=_guidance_interval),
    ),
)
"""recipes/sample.py's defaults and flags for a flow run, and its pipeline's scheduler (diffusers' flow Euler)."""
