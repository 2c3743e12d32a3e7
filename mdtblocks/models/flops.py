"""Model FLOPs: the multiply-adds of one image's forward pass, counted on the meta device.

One multiply-add counts as one FLOP, the convention of the DiT paper's Table 4 (DiT-XL/2
at 256 px: 118.6 GFLOPs), so the counts compare with published tables. A training step
costs about three forwards (the backward is two), for each pass it runs; MFU figures
double the count to get floating-point operations.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..masking.plan import MaskPlan
from ..masking.route import Route, RoutePlan
from .base import DiffusionBackbone

__all__ = ["forward_flops", "forward_flop_counts", "FlopCounts"]

_ATTENTION_OPS = ("bmm", "baddbmm")
"""The batched products of the reference attention path: ``q k^T`` and ``softmax(.) v`` (nothing else uses them)."""


@dataclasses.dataclass(frozen=True)
class FlopCounts:
    """Multiply-adds of one forward pass, with attention's token-pair products apart.

    Attributes:
        total: every multiply-add (what :func:`forward_flops` returns).
        attention: the attention scores ``q k^T`` and their product with the values: ``2 m^2 d``
            for a block over ``m`` tokens of width ``d`` (quadratic in the tokens).
    """

    total: int
    attention: int

    @property
    def rest(self) -> int:
        """Everything but :attr:`attention`: projections, MLPs, modulation, patch embedding, the head."""
        return self.total - self.attention


def forward_flops(
    model: DiffusionBackbone, kept_tokens: int | None = None, route: Route | Sequence[Route] | None = None
) -> int:
    """Multiply-adds of one image's forward pass of ``model``'s architecture (:func:`forward_flop_counts`'s total).

    Args:
        model: as :func:`forward_flop_counts`.
        kept_tokens: as :func:`forward_flop_counts`.
        route: as :func:`forward_flop_counts`.
    """
    return forward_flop_counts(model, kept_tokens, route).total


def forward_flop_counts(
    model: DiffusionBackbone, kept_tokens: int | None = None, route: Route | Sequence[Route] | None = None
) -> FlopCounts:
    """Multiply-adds of one image's forward pass of ``model``'s architecture, attention's products apart.

    The count is taken by running a copy of the architecture (built from ``model.config``
    on the meta device, so nothing is allocated or computed) under PyTorch's FLOP counter,
    with the reference attention path, whose two matrix products are counted like the
    fused kernels' work. Weights and the attention backend of ``model`` do not matter.

    Args:
        model: a :class:`~mdtblocks.MaskedDiffusionTransformer`, :class:`~mdtblocks.DiT` or
            :class:`~mdtblocks.MaskDiT`.
        kept_tokens: ``None`` for the plain pass over all ``n`` tokens; for MDT and MaskDiT
            models, the masked pass keeping this many tokens (``1 <= kept_tokens <= n``).
        route: token routing (one :class:`~mdtblocks.masking.route.Route` or a list with
            disjoint spans): the blocks of each span see only the tokens that go through it,
            ``m - int(m * ratio)`` of the ``m`` reaching it (``m`` as the model's
            ``route_tokens`` says: the kept tokens in an MDT encoder during the masked pass).

    Returns:
        Multiply-adds (one per multiply-add; matrix products, convolution and attention), in
        all and those of attention's score and value products.
    """
    if not isinstance(model, DiffusionBackbone):
        raise TypeError(f"forward_flops needs an mdtblocks model, got {type(model).__name__}")
    cfg = model.config
    n = model.num_tokens
    if kept_tokens is not None:
        if not hasattr(cfg, "mask_ratio"):  # MDT's masked pass, MaskDiT's encoder on the kept tokens
            raise ValueError(f"kept_tokens={kept_tokens}: a {type(model).__name__} has no masked pass")
        if not 1 <= kept_tokens <= n:
            raise ValueError(f"kept_tokens={kept_tokens} is outside [1, {n}] (the model has {n} tokens)")
    routes = () if route is None else (route,) if isinstance(route, Route) else route
    if not isinstance(routes, (list, tuple)) or not all(isinstance(r, Route) for r in routes):
        raise TypeError(f"route must be a Route or a list of Routes, got {type(route).__name__}")
    with torch.device("meta"):
        copy = type(model)(dataclasses.replace(cfg, attention_backend="math")).eval()
    copy.check_values = False
    plans = [_meta_plan(r, copy.route_tokens(r.start, kept_tokens)) for r in routes]
    x = torch.zeros(1, cfg.in_channels, cfg.input_size, cfg.input_size, device="meta")
    t = torch.zeros(1, dtype=torch.long, device="meta")
    y = torch.zeros(1, dtype=torch.long, device="meta")
    kwargs: dict[str, object] = {} if kept_tokens is None else {"ids_keep": torch.zeros(1, kept_tokens, dtype=torch.long, device="meta")}
    if plans:
        kwargs["route"] = plans
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        copy(x, t, y, **kwargs)
    ops = counter.get_flop_counts().get("Global", {})
    attention = sum(count for op, count in ops.items() if str(op).split(".")[-1] in _ATTENTION_OPS)
    return FlopCounts(total=counter.get_total_flops() // 2, attention=attention // 2)  # the counter counts a multiply-add as two


def _meta_plan(route: Route, num_tokens: int) -> RoutePlan:
    """A shape-only plan of ``route`` over ``num_tokens`` tokens (meta tensors: nothing computed)."""
    k = route.num_kept(num_tokens)
    meta = torch.device("meta")
    plan = MaskPlan(
        ids_keep=torch.zeros(1, k, dtype=torch.long, device=meta),
        ids_restore=torch.zeros(1, num_tokens, dtype=torch.long, device=meta),
        mask=torch.zeros(1, num_tokens, device=meta),
    )
    return RoutePlan(route.start, route.end, plan)
