"""Token rules: which tokens each training pass shows the backbone, as rules over one mask plan.

A rule draws a :class:`~mdtblocks.masking.MaskPlan` (or nothing) for a batch and says
which forward passes a training step makes with it. The training policy (mask ratios,
the weight of the masked pass, whether it has its own draws) lives here, not in the
model's config. :class:`PlainRule` is DiT's step (one pass, every token);
:class:`MaskedTwoPassRule` is MDT's (the full pass plus a pass over the kept tokens).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

import torch
from jaxtyping import Int
from torch import Tensor

from ..masking import MaskPlan, MaskSampler
from ..registry import Registry

__all__ = [
    "TokenPass", "TokenRule", "PlainRule", "MaskedTwoPassRule", "TOKEN_RULES", "register_token_rule", "rule_from_record",
]


@dataclass(frozen=True)
class TokenPass:
    """One forward pass of a training step.

    Attributes:
        name: the pass's name; its loss is logged as ``loss_<name>`` when a step makes
            several passes, and its other terms get ``_<name>`` unless ``primary``.
        ids_keep: ``(b, k)`` tokens the backbone sees, or ``None`` for all of them.
        weight: factor of this pass's loss in the total; ``None`` adds it unscaled.
        own_draws: the pass has its own noise and label drops (the draws' ``masked_*``).
        primary: the pass whose terms keep their plain names (``mse``, ``vb``).
    """

    name: str
    ids_keep: Int[Tensor, "b k"] | None = None
    weight: float | None = None
    own_draws: bool = False
    primary: bool = False


@runtime_checkable
class TokenRule(Protocol):
    """What the criterion asks of a token rule.

    Attributes:
        kind: the rule's name in the run record (``"plain"``, ``"mdt_masked"``).
        own_draws: the rule's extra pass draws its own noise and label drops.
    """

    kind: ClassVar[str]
    own_draws: bool

    def draw(
        self, batch: int, num_tokens: int, generator: torch.Generator, device: torch.device | str | None = None
    ) -> MaskPlan | None:
        """The step's mask plan for ``batch`` grids of ``num_tokens`` tokens (``None``: the rule masks nothing)."""
        ...

    def passes(self, plan: MaskPlan | None) -> tuple[TokenPass, ...]:
        """The forward passes of a step with ``plan``, the first being the primary one."""
        ...

    def to_record(self) -> dict[str, Any]:
        """Every option as JSON values, with ``"kind"``."""
        ...


_FULL = TokenPass("unmasked", primary=True)


@dataclass(frozen=True)
class PlainRule:
    """DiT's step: one pass over every token; draws nothing."""

    kind: ClassVar[str] = "plain"
    own_draws: ClassVar[bool] = False

    @property
    def sampler(self) -> None:
        """No mask sampler: the rule masks nothing."""
        return None

    def draw(
        self, batch: int, num_tokens: int, generator: torch.Generator, device: torch.device | str | None = None
    ) -> None:
        """No plan."""
        return None

    def passes(self, plan: MaskPlan | None) -> tuple[TokenPass, ...]:
        """The full pass alone."""
        return (_FULL,)

    def to_record(self) -> dict[str, Any]:
        """``{"kind": "plain"}``."""
        return {"kind": self.kind}


@dataclass(frozen=True)
class MaskedTwoPassRule:
    """MDT's step: the full pass, plus ``masked_weight`` times a pass that sees only the kept tokens.

    Attributes:
        mask_ratio: lower end of the mask ratio (MDT and MDTv2: 0.3).
        mask_ratio_range: width of the per-batch random ratio interval (MDTv2: 0.2; MDT: 0).
        masked_weight: weight of the masked pass's loss (official: 1).
        masked_draws: ``"independent"`` (the official trainers: the masked pass has its own
            noise and label drops) or ``"shared"`` (it reuses the full pass's).
    """

    kind: ClassVar[str] = "mdt_masked"

    mask_ratio: float = 0.3
    mask_ratio_range: float = 0.0
    masked_weight: float | int = 1.0
    masked_draws: Literal["shared", "independent"] = "independent"

    def __post_init__(self) -> None:
        if self.masked_draws not in ("shared", "independent"):
            raise ValueError(f"masked_draws must be 'shared' or 'independent', got {self.masked_draws!r}")
        MaskSampler(self.mask_ratio, self.mask_ratio_range)  # validates the ratios

    @property
    def sampler(self) -> MaskSampler:
        """The mask sampler of these ratios."""
        return MaskSampler(self.mask_ratio, self.mask_ratio_range)

    @property
    def own_draws(self) -> bool:  # type: ignore[override]
        """The masked pass has its own noise and label drops (the official protocol)."""
        return self.masked_draws == "independent"

    def draw(
        self, batch: int, num_tokens: int, generator: torch.Generator, device: torch.device | str | None = None
    ) -> MaskPlan:
        """A random plan (see :class:`~mdtblocks.masking.MaskSampler`)."""
        return self.sampler(batch, num_tokens, generator=generator, device=device)

    def passes(self, plan: MaskPlan | None) -> tuple[TokenPass, ...]:
        """The full pass, and (given a plan) the masked pass over ``plan.ids_keep``."""
        if plan is None:
            return (_FULL,)
        masked = TokenPass("masked", ids_keep=plan.ids_keep, weight=self.masked_weight, own_draws=self.own_draws)
        return (_FULL, masked)

    def to_record(self) -> dict[str, Any]:
        """The ratios, the weight and the draws protocol, with ``"kind": "mdt_masked"``."""
        return {
            "kind": self.kind, "mask_ratio": float(self.mask_ratio), "mask_ratio_range": float(self.mask_ratio_range),
            "masked_weight": float(self.masked_weight), "masked_draws": self.masked_draws,
        }


TOKEN_RULES: Registry[TokenRule] = Registry("token rule")
"""``kind`` -> a function that rebuilds the rule from its record."""
TOKEN_RULES.register(PlainRule.kind, lambda record: PlainRule())
TOKEN_RULES.register(
    MaskedTwoPassRule.kind, lambda record: MaskedTwoPassRule(**{k: v for k, v in record.items() if k != "kind"})
)


def register_token_rule(kind: str, from_record: Callable[[Mapping[str, Any]], TokenRule]) -> None:
    """Make :func:`rule_from_record` rebuild records of ``kind`` (also for rules outside the package)."""
    TOKEN_RULES.register(kind, from_record)


def rule_from_record(record: Mapping[str, Any]) -> TokenRule:
    """Rebuild a token rule from its ``to_record`` output; unknown kinds are refused with the known ones."""
    try:
        return TOKEN_RULES.build(record)
    except TypeError as err:
        raise ValueError(f"bad token rule record {dict(record)!r}: {err}") from None
