"""``MaskedDiffusionObjective``: the earlier name of the criterion "Gaussian diffusion x MDT's two-pass rule".

Kept for code written against it (the parity tests, benchmarks, user scripts): it takes a
:class:`~mdtblocks.diffusion.GaussianDiffusion` and builds the token rule and the label
dropout from the legacy fields of the model's config (:func:`rule_of_model`,
:meth:`LabelDropout.of_model <mdtblocks.criterion.labels.LabelDropout.of_model>`), as before. New code builds a
:class:`~mdtblocks.criterion.Criterion` from an objective and a token rule.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

import torch
from torch import Tensor, nn

from ..diffusion.gaussian import GaussianDiffusion
from ..objectives.gaussian import GaussianObjective
from ..tokens.legacy import rule_of_config
from ..tokens.rules import MaskedTwoPassRule, TokenRule
from ..typing import Image, Labels
from .criterion import Criterion
from .draws import StepRandomness, Streams
from .labels import LabelDropout

__all__ = ["MaskedDiffusionObjective", "rule_of_model"]


def rule_of_model(model: nn.Module, masked_draws: str = "independent", masked_weight: float | int = 1.0) -> TokenRule:
    """The token rule a backbone's config records: its published (or legacy) mask ratios as a rule.

    :func:`~mdtblocks.tokens.rule_of_config` of ``model.config``: MDT's two passes, MaskDiT's
    dropping, or DiT's plain rule.

    Raises:
        TypeError: ``model`` has no ``config`` (a model of your own: build its rule, e.g.
            ``MaskedTwoPassRule(0.3)``, and a :class:`Criterion` with it).
    """
    config = getattr(model, "config", None)
    if config is None:
        raise TypeError(
            f"{type(model).__name__} has no config recording a token rule; build the rule yourself "
            "(e.g. MaskedTwoPassRule(0.3) or PlainRule()) and a Criterion with it"
        )
    return rule_of_config(config, masked_draws, masked_weight)  # type: ignore[arg-type]


@dataclass(frozen=True)
class MaskedDiffusionObjective:
    """The MDT / MDTv2 loss: ``loss(x_t) + masked_weight * loss(x_t with masked tokens)``.

    Both passes share the timestep, the clean latents and the labels before dropout. With
    ``masked_draws="independent"`` (the default) the masked pass has its own noise and its
    own label drops, as in the official MDT and MDTv2 trainers; with ``"shared"`` it reuses
    those of the unmasked pass. Without a mask plan (DiT) the loss is the unmasked one
    alone. The token rule and the label dropout are those the config of the model it draws
    for records (:func:`rule_of_model`).

    Attributes:
        diffusion: the training process (``create_diffusion()``; MDTv2: ``snr_gamma=5``).
        masked_weight: weight of the masked loss (official: 1).
        masked_draws: ``"independent"`` (the official protocol) or ``"shared"``.
    """

    diffusion: GaussianDiffusion
    masked_weight: float | int = 1.0
    masked_draws: Literal["shared", "independent"] = "independent"

    def __post_init__(self) -> None:
        if self.masked_draws not in ("shared", "independent"):
            raise ValueError(f"masked_draws must be 'shared' or 'independent', got {self.masked_draws!r}")

    @property
    def independent(self) -> bool:
        """The masked pass has its own noise and label drops (the official protocol)."""
        return self.masked_draws == "independent"

    @cached_property
    def objective(self) -> GaussianObjective:
        """The Gaussian objective of ``diffusion``."""
        return GaussianObjective.from_process(self.diffusion)

    @cached_property
    def _any_model(self) -> Criterion:
        return self.criterion()

    def criterion(self, model: nn.Module | None = None) -> Criterion:
        """The equivalent :class:`Criterion` (rule and label dropout of ``model``; without one, MDT's rule)."""
        if model is None:
            tokens: TokenRule = MaskedTwoPassRule(masked_weight=self.masked_weight, masked_draws=self.masked_draws)
            labels = LabelDropout()
        else:
            tokens, labels = rule_of_model(model, self.masked_draws, self.masked_weight), LabelDropout.of_model(model)
        return Criterion(self.objective, tokens, labels)

    def __call__(
        self, net: Callable[..., Tensor], x_start: Image, y: Labels, draws: StepRandomness, model_kwargs: Mapping[str, Any] | None = None
    ) -> dict[str, Tensor]:
        """Per-sample losses of one batch (see :meth:`Criterion.__call__`); the passes follow ``draws.mask``."""
        return self._any_model(net, x_start, y, draws, model_kwargs)

    def draw(self, model: nn.Module, x_start: Image, generator: torch.Generator | None) -> StepRandomness:
        """Draw a step's randomness from ``generator``: t, noise, label drops, mask, then the masked pass's (see :meth:`Criterion.draw`)."""
        return self.criterion(model).draw(model, x_start, generator)

    def draw_step(
        self, model: nn.Module, *, streams: Streams, global_batch: int, sample_shape: tuple[int, ...], device: torch.device
    ) -> StepRandomness:
        """The global batch's draws of one step (see :meth:`Criterion.draw_step`)."""
        return self.criterion(model).draw_step(
            model, streams=streams, global_batch=global_batch, sample_shape=sample_shape, device=device
        )

    def logged(self, terms: Mapping[str, Tensor]) -> tuple[str, ...]:
        """The terms to log (see :meth:`Criterion.logged`)."""
        return self._any_model.logged(terms)

    def to_record(self) -> dict[str, Any]:
        """Refused: which rule and dropout apply depends on the model (build a :class:`Criterion` to record a run)."""
        raise ValueError("MaskedDiffusionObjective does not know its token rule; record a Criterion instead")

