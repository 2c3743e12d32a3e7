"""EDM's samplers as a sampling command offers them (``recipes/sample.py``): :data:`EDM_SAMPLING`.

Without ``--sampler`` and ``--steps`` an EDM run gets MaskDiT's evaluation: Heun on 40
noise levels (79 network calls), deterministic. The churn flags set the stochastic
churn of :meth:`~mdtblocks.objectives.edm.EDMObjective.sample` (``S_churn``, ``S_min``,
``S_max``, ``S_noise``; see :class:`~mdtblocks.objectives.edm.ChurnOptions`), read by
both of its samplers; its noise is drawn from each batch's generator.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ..sampling_spec import SamplerOption, SamplingSpec

__all__ = ["EDM_SAMPLING", "EDM_DEFAULT_STEPS"]

EDM_DEFAULT_STEPS = 40
"""Noise levels of an EDM run's sampling without ``--steps``: MaskDiT's official evaluation (Heun, 40 levels)."""


def _non_negative(flag: str) -> Any:
    def check(value: Any, flags: Mapping[str, Any]) -> str | None:
        if value is None or 0 <= value < math.inf:  # NaN fails the comparison: refused too
            return None
        return f"{flag} must be a finite non-negative number, got {value}"

    return check


def _churn_range(value: float | None, flags: Mapping[str, Any]) -> str | None:
    if value is not None and not 0 <= value < math.inf:
        return f"--churn-max must be a finite non-negative number or none (no upper bound), got {value}"
    low = flags.get("churn_min", 0.0)
    if value is not None and low is not None and 0 <= low < math.inf and low > value:
        return f"--churn-min {low} exceeds --churn-max {value}: expected MIN <= MAX"
    return None


EDM_SAMPLING = SamplingSpec(
    default_sampler="heun",
    default_steps=EDM_DEFAULT_STEPS,
    options=(
        SamplerOption("churn", float, 0.0,
                      "EDM's stochastic churn S_churn: each level in [--churn-min, --churn-max] is raised by "
                      "gamma = min(churn / steps, sqrt(2) - 1) with fresh noise before its step; 0: the deterministic "
                      "sampler (EDM runs)", keyword="S_churn", check=_non_negative("--churn")),
        SamplerOption("churn_min", float, 0.0, "lowest noise level that is churned, S_min (EDM runs)",
                      keyword="S_min", check=_non_negative("--churn-min")),
        SamplerOption("churn_max", float | None, None,
                      "highest noise level that is churned, S_max; none: no upper bound (EDM runs)",
                      keyword="S_max", convert=lambda v: math.inf if v is None else v, check=_churn_range),
        SamplerOption("churn_noise", float, 1.0,
                      "scale of the churn noise, S_noise (slightly above 1 offsets detail loss) (EDM runs)",
                      keyword="S_noise", check=_non_negative("--churn-noise")),
    ),
)
"""recipes/sample.py's defaults and flags for an EDM run (no diffusers scheduler, so no pipeline)."""
