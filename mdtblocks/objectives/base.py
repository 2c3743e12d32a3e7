"""The objective interface: what the criterion, the samplers and the run record ask of a training objective.

An objective (the Gaussian diffusion, flow matching, EDM, ...) is one module that
implements :class:`Objective`. The training criterion calls it with draws it makes
from the step's generators; the samplers ask it for its sampler family; the run
record stores :meth:`Objective.to_record` and :func:`objective_from_record` rebuilds it.
Nothing outside an objective's own module knows its math.

What a sampling command offers for an objective (its samplers' flag names, default
sampler and steps, the options of its samplers, the diffusers scheduler of its pipeline)
the objective declares as its ``sampling`` attribute, a
:class:`~mdtblocks.objectives.sampling_spec.SamplingSpec` (optional: without one its
samplers go by their own names). An objective with diffusers schedulers has
``diffusers_scheduler(kind)``; one whose schedulers do not take the network's output as it
is (flow matching: diffusers counts its noise level the other way) also implements
:class:`SchedulerSampling`, and the pipeline then records it and samples through it.

Time conventions: each objective owns its time variable (its range and units). The
backbone embeds whatever time it is given. Guidance schedules are written against
:meth:`Objective.data_fraction`, which maps the objective's time to ``[0, 1]``: 0 at
pure noise, 1 at clean data.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from jaxtyping import Float, Shaped
from torch import Tensor

from ..registry import Registry

__all__ = [
    "Objective", "PointwiseObjective", "PointwiseLosses", "SchedulerSampling", "register_objective",
    "objective_from_record", "OBJECTIVES",
]

Image = Float[Tensor, "b c hh ww"]
ElementMap = Float[Tensor, "b cc hh ww"]
"""A loss term per element: ``cc`` is the image's channels, or 1 for a term per pixel (flow's cosine term)."""


@runtime_checkable
class Objective(Protocol):
    """A training objective and its samplers.

    Attributes:
        kind: the objective's name in the run record (``"gaussian"``, ``"flow"``, ``"edm"``).
        samplers: the names of the samplers this objective's family offers.
    """

    kind: ClassVar[str]
    samplers: ClassVar[tuple[str, ...]]

    def draw_times(self, n: int, generator: torch.Generator) -> Shaped[Tensor, "n"]:
        """``n`` training times (or noise levels) in the objective's own units, on ``generator``'s device."""
        ...

    def draw_noise(self, x_start: Image, generator: torch.Generator) -> Image:
        """Noise shaped like ``x_start`` (standard normal for every objective so far)."""
        ...

    def losses(
        self,
        net: Callable[..., Tensor],
        x_start: Image,
        times: Shaped[Tensor, "b"],
        noise: Image,
        model_kwargs: Mapping[str, Any],
    ) -> dict[str, Float[Tensor, "b"]]:
        """Per-sample loss terms of one pass: ``"loss"`` (to average and backpropagate) and named terms to log.

        ``net(x_noisy, times_for_net, **model_kwargs)`` is the backbone as called (wrapped
        for DDP, compile or autocast is fine).
        """
        ...

    def data_fraction(self, times: Shaped[Tensor, "b"]) -> Float[Tensor, "b"]:
        """The objective's time mapped to ``[0, 1]``: 0 at pure noise, 1 at clean data (for guidance schedules)."""
        ...

    def sample(
        self,
        net: Callable[..., Tensor],
        noise: Image,
        model_kwargs: Mapping[str, Any],
        *,
        sampler: str,
        num_steps: int,
        generator: torch.Generator | None = None,
        progress: bool = False,
        **options: Any,
    ) -> Image:
        """Integrate from ``noise`` to data with one of :attr:`samplers`; ``net`` may be a guided model.

        ``clip_denoised=True`` among ``options`` asks to keep data estimates in ``[-1, 1]``
        (pixel-space models; the training loop's sample grids pass it there); an objective
        without data estimates to clip may ignore it.
        """
        ...

    def to_record(self) -> dict[str, Any]:
        """Every option as JSON values, with ``"kind"``: what a run's ``config.json`` stores."""
        ...


@dataclass(frozen=True)
class PointwiseLosses:
    """One pass's loss terms before they are reduced over the elements of each sample.

    The objective's per-sample ``losses`` are these maps averaged over every element;
    a token rule that scores only some patches (MaskDiT's dropping) averages them over
    those patches instead (:meth:`reduce`).

    Attributes:
        terms: term name -> its per-element map ``(b, cc, hh, ww)``, any per-sample
            weighting already applied (Gaussian: ``"mse"`` and, with learned sigma,
            ``"vb"``; flow: ``"mse"`` and ``"cosine"``; EDM: ``"mse"``, weighted by
            ``lambda(sigma)``).
        weights: term name -> its factor in ``"loss"`` (missing: 1).
        noisy: ``(b, c, hh, ww)`` the noisy input the network was given (before any input scaling).
        reconstruction: ``(b, c, hh, ww)`` the output an MAE term compares with ``noisy`` on
            patches the network did not see: EDM's denoised ``D`` (as MaskDiT), the
            network's prediction channels for the Gaussian diffusion and flow matching
            (their data estimates divide by the signal scale and grow without bound near pure noise).
    """

    terms: Mapping[str, ElementMap]
    noisy: Image
    reconstruction: Image
    weights: Mapping[str, float] = field(default_factory=dict)

    def reduce(self, reduction: Callable[[ElementMap], Float[Tensor, "b"]]) -> dict[str, Float[Tensor, "b"]]:
        """Per-sample terms under ``reduction``, and their weighted sum as ``"loss"``."""
        out = {name: reduction(term) for name, term in self.terms.items()}
        loss: Tensor | None = None
        for name, value in out.items():
            weight = self.weights.get(name, 1.0)
            weighted = value if weight == 1.0 else weight * value
            loss = weighted if loss is None else loss + weighted
        if loss is None:
            raise ValueError("PointwiseLosses has no terms")
        return {"loss": loss, **out}


@runtime_checkable
class PointwiseObjective(Objective, Protocol):
    """An :class:`Objective` that also gives its loss terms per element (what MaskDiT's dropping needs)."""

    def pointwise_losses(
        self,
        net: Callable[..., Tensor],
        x_start: Image,
        times: Shaped[Tensor, "b"],
        noise: Image,
        model_kwargs: Mapping[str, Any],
    ) -> PointwiseLosses:
        """The pass of :meth:`Objective.losses`, with its terms before the reduction over elements.

        Averaging every term over all elements gives :meth:`Objective.losses` (up to rounding).
        """


@runtime_checkable
class SchedulerSampling(Protocol):
    """An objective that samples with a diffusers scheduler through its own loop (:class:`~mdtblocks.MDTPipeline`).

    The pipeline of such an objective records it (``pipe.config.objective``), checks its
    scheduler with :meth:`check_scheduler` and samples with :meth:`diffusers_sample`. An
    objective whose diffusers schedulers take the network's output as it is (the Gaussian
    diffusion: its schedulers hold the whole process) needs neither: the pipeline runs
    diffusers' own loop over them.
    """

    def diffusers_scheduler(self, kind: str) -> Any:
        """A diffusers scheduler of this objective (the ``kind`` its ``sampling`` spec names for a pipeline)."""
        ...

    def check_scheduler(self, scheduler: Any) -> None:
        """Refuse (``ValueError``, one line) a diffusers scheduler this objective cannot sample with."""
        ...

    def diffusers_sample(
        self,
        scheduler: Any,
        net: Callable[..., Tensor],
        noise: Image,
        model_kwargs: Mapping[str, Any],
        num_steps: int,
        progress_bar: Callable[[Any], Any] = iter,
        **step_kwargs: Any,
    ) -> Image:
        """Integrate ``noise`` to data in ``num_steps`` steps of ``scheduler`` (``step_kwargs`` go to ``scheduler.step``)."""
        ...


OBJECTIVES: Registry[Objective] = Registry("objective")
"""``kind`` -> a function that rebuilds the objective from its record."""


def register_objective(kind: str, from_record: Callable[[Mapping[str, Any]], Objective]) -> None:
    """Make ``objective_from_record`` rebuild records of ``kind`` with ``from_record`` (also for objectives outside the package)."""
    OBJECTIVES.register(kind, from_record)


def objective_from_record(record: Mapping[str, Any]) -> Objective:
    """Rebuild an objective from :meth:`Objective.to_record`'s output; unknown kinds are refused with the known ones."""
    return OBJECTIVES.build(record)
