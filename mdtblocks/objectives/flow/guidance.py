"""Classifier-free guidance for flow models: a constant scale, or a scale only for t in an interval (LightningDiT).

Guidance at every step over-saturates and loses diversity; applying it only over part
of the trajectory keeps most of the gain (Kynkäänniemi et al. 2024, "Applying guidance
in a limited interval"; LightningDiT's sampling setting). Times are flow times (0 noise,
1 data); for another objective map them first with its ``data_fraction``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from jaxtyping import Float, Shaped
from torch import Tensor

from ...sampling.guidance import ClassifierFreeGuidance

__all__ = ["FlowGuidance", "flow_guidance"]


class FlowGuidance(ClassifierFreeGuidance):
    """Guidance on the stacked batch ``[cond; uncond]`` with scale ``cfg_scale`` for ``t`` in ``[lo, hi]`` and 1 elsewhere.

    Args:
        model: the backbone, ``model(x, t, y)`` with flow times ``t``.
        cfg_scale: the guidance scale inside the interval.
        interval: ``(lo, hi)`` with ``0 <= lo <= hi <= 1``; ``None`` guides everywhere.
        guided_channels: channels to guide; ``None`` all, 3 as SiT's ``forward_with_cfg``.
        data_fraction: maps the model's time to flow time before the interval test (another
            objective's ``data_fraction``); ``None``: the times are flow times.
    """

    def __init__(
        self,
        model: Callable[..., Float[Tensor, "b c2 hh ww"]],
        cfg_scale: float | int,
        *,
        interval: tuple[float, float] | None = None,
        guided_channels: int | None = None,
        data_fraction: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        super().__init__(model, cfg_scale, guided_channels=guided_channels, data_fraction=data_fraction)
        if interval is not None:
            if not (isinstance(interval, (tuple, list)) and len(interval) == 2):
                raise ValueError(f"interval must be a pair (lo, hi), got {interval!r}")
            lo, hi = (float(v) for v in interval)
            if not (math.isfinite(lo) and math.isfinite(hi) and 0 <= lo <= 1 and 0 <= hi <= 1):
                raise ValueError(f"guidance interval {interval!r} must lie in [0, 1] (flow time: 0 noise, 1 data)")
            if lo > hi:
                raise ValueError(f"guidance interval {interval!r} is reversed: expected (lo, hi) with lo <= hi")
            interval = (lo, hi)
        self.interval = interval

    def extra_repr(self) -> str:
        """The guidance settings, shown in the module's ``repr``."""
        return f"cfg_scale={self.cfg_scale}, interval={self.interval}, guided_channels={self.guided_channels}"

    def scale(self, t: Shaped[Tensor, "b"]) -> Float[Tensor, "b"]:
        """``cfg_scale`` where ``t`` is in the interval, 1 elsewhere."""
        full = torch.full(t.shape, self.cfg_scale, device=t.device)
        if self.interval is None:
            return full
        lo, hi = self.interval
        if self.data_fraction is not None:
            t = self.data_fraction(t)
        inside = (t >= lo) & (t <= hi)
        return torch.where(inside, full, torch.ones_like(full))


def flow_guidance(
    model: Callable[..., Float[Tensor, "b c2 hh ww"]],
    cfg_scale: float | int,
    *,
    interval: tuple[float, float] | None = None,
    guided_channels: int | None = None,
) -> FlowGuidance:
    """Wrap ``model`` with guidance for flow sampling (see :class:`FlowGuidance`)."""
    return FlowGuidance(model, cfg_scale, interval=interval, guided_channels=guided_channels)
