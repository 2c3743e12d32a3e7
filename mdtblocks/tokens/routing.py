"""TREAD's token routing as a token rule: any rule's passes, each with a route drawn over the tokens it sees.

:class:`RoutedRule` wraps another rule (DiT's plain one, MDT's two passes, MaskDiT's
dropping where the backbone routes) and adds, per pass, a
:class:`~mdtblocks.masking.RoutePlan` of a :class:`~mdtblocks.masking.Route`. The routes are
drawn after every other draw of the step, from the same stream, so a run's other numbers
do not change when routing is switched on; a route of ratio 0 gives the plain rule's loss
exactly. A route is drawn over the tokens that reach its first block in that pass
(``model.route_tokens(start, kept)``): in MDT's masked pass, a span in the encoder routes
among the kept tokens.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ..masking import MaskPlan, Route, RoutePlan
from .rules import TokenPass, TokenRule, register_token_rule, rule_from_record

__all__ = ["RoutedRule", "draw_routes", "check_rule_model"]


@dataclass(frozen=True)
class RoutedRule:
    """``rule``'s passes with ``route`` applied in each (TREAD, Krause et al. 2025).

    Attributes:
        rule: the token rule whose passes are routed.
        route: the span ``[start, end)`` and the share of tokens that skip it.
    """

    kind: ClassVar[str] = "routed"

    rule: TokenRule
    route: Route

    def __post_init__(self) -> None:
        if not isinstance(self.route, Route):
            raise TypeError(f"RoutedRule.route must be a Route, got {type(self.route).__name__}")
        if isinstance(self.rule, RoutedRule):
            raise ValueError("RoutedRule of a RoutedRule: give one rule with one route")
        for name in ("draw", "passes", "to_record"):
            if not callable(getattr(self.rule, name, None)):
                raise TypeError(f"RoutedRule.rule {type(self.rule).__name__} has no {name}(): not a TokenRule")

    @property
    def own_draws(self) -> bool:
        """Those of the wrapped rule."""
        return bool(self.rule.own_draws)

    def draw(
        self, batch: int, num_tokens: int, generator: torch.Generator, device: torch.device | str | None = None
    ) -> MaskPlan | None:
        """The wrapped rule's plan (the routes are drawn later, see :meth:`draw_routes`)."""
        return self.rule.draw(batch, num_tokens, generator, device)

    def passes(self, plan: MaskPlan | None) -> tuple[TokenPass, ...]:
        """The wrapped rule's passes."""
        return self.rule.passes(plan)

    @property
    def losses(self) -> object:
        """The wrapped rule's own reduction of a pass's loss (MaskDiT's), or ``None``."""
        return getattr(self.rule, "losses", None)

    def check_objective(self, objective: object) -> None:
        """The wrapped rule's check (routing itself works with every objective)."""
        check = getattr(self.rule, "check_objective", None)
        if check is not None:
            check(objective)

    def check_model(self, model: nn.Module) -> None:
        """Raise ``ValueError`` unless ``model`` routes tokens and the span fits its blocks."""
        if not callable(getattr(model, "route_tokens", None)):
            raise ValueError(
                f"token routing needs a backbone that takes route= (DiT, MDT, MDTv2, MaskDiT); {type(model).__name__} does not"
            )
        probe = self.route(1, model.route_tokens(self.route.start), generator=torch.Generator().manual_seed(0))
        model.check_route(probe, 1)  # the span fits this model's blocks (MDT: encoder or decoder, not across)
        check_rule_model(self.rule, model)

    def draw_routes(
        self, model: nn.Module, batch: int, passes: tuple[TokenPass, ...], generator: torch.Generator,
        device: torch.device | str | None = None,
    ) -> dict[str, RoutePlan]:
        """One route per pass, in pass order, over the tokens that reach the span's start in that pass."""
        out: dict[str, RoutePlan] = {}
        for p in passes:
            kept = None if p.ids_keep is None else int(p.ids_keep.shape[1])
            out[p.name] = self.route(batch, model.route_tokens(self.route.start, kept), generator=generator, device=device)
        return out

    def to_record(self) -> dict[str, Any]:
        """``{"kind": "routed", "rule": <the wrapped rule's record>, "start", "end", "ratio"}``."""
        return {
            "kind": self.kind, "rule": self.rule.to_record(), "start": int(self.route.start), "end": int(self.route.end),
            "ratio": float(self.route.ratio),
        }


def _from_record(record: Mapping[str, Any]) -> RoutedRule:
    unknown = sorted(set(record) - {"kind", "rule", "start", "end", "ratio"})
    if unknown or "rule" not in record:
        raise ValueError(f"bad routed rule record {dict(record)!r}: expected kind, rule, start, end, ratio")
    return RoutedRule(rule_from_record(record["rule"]), Route(int(record["start"]), int(record["end"]), float(record["ratio"])))


register_token_rule(RoutedRule.kind, _from_record)


def draw_routes(
    rule: TokenRule, model: nn.Module, batch: int, plan: MaskPlan | None, generator: torch.Generator,
    device: torch.device | str | None = None,
) -> dict[str, RoutePlan]:
    """The routes of a step's passes (``{}`` for a rule without routing): pass name -> drawn route."""
    draw = getattr(rule, "draw_routes", None)
    if draw is None:
        return {}
    return draw(model, batch, rule.passes(plan), generator, device)


def check_rule_model(rule: TokenRule, model: nn.Module) -> None:
    """Raise ``ValueError`` where ``rule`` cannot train ``model`` (the rule's ``check_model``, when it has one)."""
    check = getattr(rule, "check_model", None)
    if check is not None:
        check(model)
