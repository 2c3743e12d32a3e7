"""Training compute of one step: forward multiply-adds of every pass a token rule makes, times three."""

from __future__ import annotations

from typing import Any

from torch import nn

from ..models.flops import forward_flops
from ..tokens.rules import MaskedTwoPassRule, PlainRule

__all__ = ["BACKWARD_FACTOR", "step_flops"]

BACKWARD_FACTOR = 3
"""Forward plus backward, in forward passes: the backward pass costs about twice the forward."""


def _masked_pass_flops(model: nn.Module, rule: MaskedTwoPassRule, points: int = 9) -> float:
    """The masked pass's mean forward cost over the rule's mask ratios (uniform in its interval)."""
    n = model.num_tokens
    ratios = [rule.mask_ratio + rule.mask_ratio_range * i / max(1, points - 1) for i in range(points)]
    if rule.mask_ratio_range == 0:
        ratios = ratios[:1]
    kept = [max(1, int(n * (1 - r))) for r in ratios]  # what the mask sampler keeps at each ratio
    return sum(forward_flops(model, k) for k in kept) / len(kept)


def step_flops(model: nn.Module, tokens: Any, extra_forward_flops: float | int = 0.0) -> float:
    """Multiply-adds one training image costs in one optimizer step (forward and backward).

    Counts every pass the token rule makes (:func:`~mdtblocks.models.flops.forward_flops`):
    DiT's one full pass; MDT's full pass plus its masked pass, averaged over the mask
    ratio's interval. A rule outside the package may count its own passes with a
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
    if hasattr(tokens, "forward_flops"):
        forward = float(tokens.forward_flops(model))
    elif isinstance(tokens, PlainRule):
        forward = float(forward_flops(model))
    elif isinstance(tokens, MaskedTwoPassRule):
        forward = float(forward_flops(model)) + _masked_pass_flops(model, tokens)
    else:
        raise TypeError(
            f"cannot count the passes of token rule {type(tokens).__name__}: give it a forward_flops(model) method"
        )
    if extra_forward_flops < 0:
        raise ValueError(f"extra_forward_flops must be non-negative, got {extra_forward_flops}")
    return BACKWARD_FACTOR * (forward + float(extra_forward_flops))
