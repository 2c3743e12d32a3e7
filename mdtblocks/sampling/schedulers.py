"""diffusers schedulers for sampling: those of the Gaussian diffusion (:mod:`mdtblocks.diffusion.schedulers`), and an objective's own."""

from __future__ import annotations

from typing import Any

from ..diffusion.schedulers import SCHEDULER_KINDS, diffusers_sample_loop, make_scheduler, scheduler_model_output

__all__ = ["SCHEDULER_KINDS", "make_scheduler", "diffusers_scheduler", "diffusers_sample_loop", "scheduler_model_output"]


def diffusers_scheduler(objective: Any, kind: str | None = "ddim") -> Any:
    """The diffusers scheduler ``kind`` of ``objective`` (its optional ``diffusers_scheduler``); refused for one without.

    ``kind=None`` asks for the objective's own default (Gaussian: DDIM; flow: Euler).
    """
    make = getattr(objective, "diffusers_scheduler", None)
    if make is None:
        raise ValueError(
            f"the {getattr(objective, 'kind', type(objective).__name__)!r} objective has no diffusers scheduler; "
            "sample its checkpoints with recipes/sample.py"
        )
    return make() if kind is None else make(kind)
