"""Training compute of one step: forward multiply-adds of every pass a token rule makes, times three."""

from __future__ import annotations

from typing import Any

from torch import nn

from ..models.flops import forward_flops
from ..masking import Route
from ..tokens.maskdit import MaskDiTDropRule
from ..tokens.routing import RoutedRule
from ..tokens.rules import MaskedTwoPassRule, PlainRule

__all__ = ["BACKWARD_FACTOR", "step_flops"]

BACKWARD_FACTOR = 3
"""Forward plus backward, in forward passes: the backward pass costs about twice the forward."""


def _masked_pass_flops(model: nn.Module, rule: MaskedTwoPassRule, route: Route | None = None, points: int = 9) -> float:
    """The masked pass's mean forward cost over the rule's mask ratios (uniform in its interval)."""
    n = model.num_tokens
    ratios = [rule.mask_ratio + rule.mask_ratio_range * i / max(1, points - 1) for i in range(points)]
    if rule.mask_ratio_range == 0:
        ratios = ratios[:1]
    kept = [max(1, int(n * (1 - r))) for r in ratios]  # what the mask sampler keeps at each ratio
    return sum(forward_flops(model, k, route) for k in kept) / len(kept)


def _rule_forward_flops(model: nn.Module, tokens: Any, route: Route | None = None) -> float:
    """Forward multiply-adds of every pass ``tokens`` makes, each routed by ``route`` when given."""
    if hasattr(tokens, "forward_flops"):
        if route is not None:
            raise TypeError(f"cannot count routed passes of token rule {type(tokens).__name__}")
        return float(tokens.forward_flops(model))
    if isinstance(tokens, RoutedRule):
        return _rule_forward_flops(model, tokens.rule, tokens.route)
    if isinstance(tokens, PlainRule):
        return float(forward_flops(model, None, route))
    if isinstance(tokens, MaskedTwoPassRule):
        return float(forward_flops(model, None, route)) + _masked_pass_flops(model, tokens, route)
    if isinstance(tokens, MaskDiTDropRule):  # one pass: the encoder over the kept tokens, the decoder over all
        n = model.num_tokens
        kept = None if tokens.mask_ratio == 0 else max(1, int(n * (1 - tokens.mask_ratio)))
        return float(forward_flops(model, kept, route))
    raise TypeError(f"cannot count the passes of token rule {type(tokens).__name__}: give it a forward_flops(model) method")


def step_flops(model: nn.Module, tokens: Any, extra_forward_flops: float | int = 0.0) -> float:
    """Multiply-adds one training image costs in one optimizer step (forward and backward).

    Counts every pass the token rule makes (:func:`~mdtblocks.models.flops.forward_flops`):
    DiT's one full pass; MDT's full pass plus its masked pass, averaged over the mask
    ratio's interval; MaskDiT's dropping rule its one pass over the kept tokens; a
    :class:`~mdtblocks.tokens.RoutedRule` its wrapped rule's passes with the route's span
    seeing only the tokens that go through it. A rule outside the package may count its own passes with a
    ``forward_flops(model) -> float`` method (routing, dropping). ``extra_forward_flops``
    adds the forward cost of extra losses' heads (e.g. an alignment projector). The sum
    is multiplied by :data:`BACKWARD_FACTOR`.

    Args:
        model: the backbone.
        tokens: the criterion's token rule.
        extra_forward_flops: forward multiply-adds per image outside the backbone's passes.

    Raises:
        TypeError: for a rule this function cannot count.
    """
    forward = _rule_forward_flops(model, tokens)
    if extra_forward_flops < 0:
        raise ValueError(f"extra_forward_flops must be non-negative, got {extra_forward_flops}")
    return BACKWARD_FACTOR * (forward + float(extra_forward_flops))
