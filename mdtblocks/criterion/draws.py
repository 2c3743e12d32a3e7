"""The draws of one training step (times, noise, label drops, mask plan) and the streams they come from."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from jaxtyping import Bool, Int, Shaped

from ..masking import MaskPlan, RoutePlan
from ..typing import Image, Tensor

__all__ = ["StepRandomness", "StepDraws", "Streams", "to_device"]

Streams = Callable[[str, torch.device], torch.Generator]
"""``(stream name, device) -> generator``: the step's independent random streams (the loop seeds them by
``(seed, stream, step)``; see :func:`~mdtblocks.training.step_generator`)."""


@dataclass(frozen=True)
class StepRandomness:
    """Every random draw of one training step, for a batch of ``b`` samples.

    Attributes:
        t: ``(b,)`` the objective's times (diffusion: steps in ``[0, num_timesteps)``).
        noise: ``(b, c, hh, ww)`` standard normal noise.
        drop_label: ``(b,)`` True where the label becomes ``null_class`` (classifier-free guidance).
        mask: the mask plan of the masked pass, or ``None`` for models without masking.
        null_class: the label a dropped label becomes (the model's ``num_classes``).
        masked_noise: ``(b, c, hh, ww)`` the masked pass's own noise, for the objective's
            ``masked_draws="independent"`` (the default); ``None`` for ``"shared"``.
        masked_drop_label: ``(b,)`` the masked pass's own label drops; as ``masked_noise``.
        routes: pass name -> the route that pass's forward takes (token routing; empty without).
    """

    t: Shaped[Tensor, "b"]
    noise: Image
    drop_label: Bool[Tensor, "b"]
    mask: MaskPlan | None
    null_class: int
    masked_noise: Image | None = None
    masked_drop_label: Bool[Tensor, "b"] | None = None
    routes: dict[str, RoutePlan] = field(default_factory=dict)

    def rows(self, index: slice | Int[Tensor, "r"]) -> StepRandomness:
        """The draws of the samples at batch positions ``index``.

        A slice selects views and costs nothing; an index tensor gathers, and one on the host
        is first copied to the draws' device (on a GPU, a host-device sync).
        """
        mask = self.mask
        if mask is not None:
            mask = MaskPlan(ids_keep=mask.ids_keep[index], ids_restore=mask.ids_restore[index], mask=mask.mask[index])
        return StepRandomness(
            self.t[index], self.noise[index], self.drop_label[index], mask, self.null_class,
            None if self.masked_noise is None else self.masked_noise[index],
            None if self.masked_drop_label is None else self.masked_drop_label[index],
            {name: _route_rows(r, index) for name, r in self.routes.items()},
        )


StepDraws = StepRandomness
"""The criterion's name for :class:`StepRandomness`."""


def _route_rows(route: RoutePlan, index: slice | Int[Tensor, "r"]) -> RoutePlan:
    """The route's plan for the samples at ``index``."""
    p = route.plan
    return RoutePlan(route.start, route.end, MaskPlan(ids_keep=p.ids_keep[index], ids_restore=p.ids_restore[index], mask=p.mask[index]))


def to_device(x: Tensor, device: torch.device) -> Tensor:
    """Copy a CPU draw to ``device`` without a host sync (a copy from pageable memory waits for the GPU)."""
    if device.type != "cuda":
        return x.to(device)
    return x.pin_memory().to(device, non_blocking=True)
