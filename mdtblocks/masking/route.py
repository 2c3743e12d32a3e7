"""Token routing (TREAD, Krause et al. 2025): a random share of tokens skips a span of blocks.

A :class:`Route` is the rule (which blocks, what share of tokens); drawing it for a batch
gives a :class:`RoutePlan`: the span plus a :class:`~mdtblocks.masking.plan.MaskPlan` over
the tokens that reach the span's first block. The plan's kept tokens go through the span;
its masked tokens are the *routed* ones: they are set aside at the span's start and put back,
unchanged, at its end. A routed forward therefore adds no parameters and the same weights
run the plain (unrouted) model at inference.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import torch
from jaxtyping import Float, Int
from torch import Tensor

from .plan import MaskPlan, plan_from_ids_keep, validate_ids_keep

__all__ = ["Route", "RoutePlan", "route_from_ids_keep", "check_span", "as_routes", "default_span"]


def check_span(start: object, end: object, depth: int | None = None) -> None:
    """Raise ``TypeError``/``ValueError`` unless ``[start, end)`` is a non-empty span of block indices.

    Args:
        start: first routed block (an int, ``>= 0``).
        end: one past the last routed block (an int, ``> start``).
        depth: when given, the number of blocks the span must fit in (``end <= depth``).
    """
    for name, value in (("start", start), ("end", end)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"route {name} must be an int block index, got {value!r}")
    assert isinstance(start, int) and isinstance(end, int)
    if start < 0:
        raise ValueError(f"route start {start} is negative; expected a block index >= 0")
    if start >= end:
        raise ValueError(f"route span [{start}, {end}) is empty: start must be smaller than end")
    if depth is not None and end > depth:
        raise ValueError(f"route span [{start}, {end}) does not fit the model's {depth} blocks; expected end <= {depth}")


@dataclass(frozen=True)
class RoutePlan:
    """One drawn route: the span ``[start, end)`` and which tokens skip it.

    Attributes:
        start: index of the first block the routed tokens skip.
        end: index one past the last skipped block; the tokens are put back before block ``end``.
        plan: a mask plan over the ``m`` tokens that reach block ``start`` (``m = n``, or the
            kept tokens of an MDT masked pass in the encoder): ``plan.ids_keep`` are the
            tokens the span processes (positions in ``[0, m)``), ``plan.mask`` is 1 on the routed ones.
    """

    start: int
    end: int
    plan: MaskPlan

    def __post_init__(self) -> None:
        check_span(self.start, self.end)
        if not isinstance(self.plan, MaskPlan):
            raise TypeError(f"RoutePlan.plan must be a MaskPlan, got {type(self.plan).__name__}")

    @property
    def ids_keep(self) -> Int[Tensor, "b k"]:
        """``(b, k)`` positions of the tokens that go through the span."""
        return self.plan.ids_keep

    @property
    def num_tokens(self) -> int:
        """Tokens ``m`` reaching the span (kept plus routed)."""
        return self.plan.mask.shape[1]

    def gather(self, tokens: Float[Tensor, "b m d"]) -> Float[Tensor, "b k d"]:
        """The tokens that go through the span, in ``ids_keep`` order."""
        ids = self.plan.ids_keep
        return tokens.gather(1, ids.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))

    def restore(self, processed: Float[Tensor, "b k d"], at_start: Float[Tensor, "b m d"]) -> Float[Tensor, "b m d"]:
        """Put the span's output back among the routed tokens, which keep their values from ``at_start``."""
        ids = self.plan.ids_keep
        return at_start.scatter(1, ids.unsqueeze(-1).expand(-1, -1, processed.shape[-1]), processed)

    def validate(self, batch_size: int, num_tokens: int, check_values: bool = True) -> None:
        """Raise ``ValueError`` unless the plan routes ``num_tokens`` tokens of ``batch_size`` samples."""
        if self.num_tokens != num_tokens or self.plan.mask.shape[0] != batch_size:
            raise ValueError(
                f"route over blocks [{self.start}, {self.end}) was drawn for {self.plan.mask.shape[0]} samples of "
                f"{self.num_tokens} tokens, but those blocks see {batch_size} samples of {num_tokens} tokens"
            )
        validate_ids_keep(self.plan.ids_keep, batch_size, num_tokens, check_values)


@dataclass(frozen=True)
class Route:
    """Route a share ``ratio`` of the tokens past the blocks ``[start, end)``.

    Drawing a plan (:meth:`__call__`) takes one uniform number per token from a
    ``torch.Generator``, so the choice is part of a training step's seeded randomness.
    Each sample keeps the ``m - int(m * ratio)`` tokens of smallest draw for the span
    (TREAD's count: ``int(m * ratio)`` tokens are routed); ratio 0 routes none.

    TREAD's DiT-B/2 setting routes half the tokens from block 2 through block 8
    (its ``start_layer_idx: 2, end_layer_idx: 8``, the end inclusive), i.e.
    ``Route(start=2, end=9, ratio=0.5)`` here, where ``end`` is exclusive.

    Attributes:
        start: first block skipped by the routed tokens.
        end: one past the last skipped block.
        ratio: share of tokens routed, in ``[0, 1)``.
    """

    start: int
    end: int
    ratio: float = 0.5

    def __post_init__(self) -> None:
        check_span(self.start, self.end)
        if isinstance(self.ratio, bool) or not isinstance(self.ratio, (int, float)):
            raise TypeError(f"route ratio must be a float, got {self.ratio!r}")
        if not 0.0 <= self.ratio < 1.0:
            raise ValueError(f"route ratio {self.ratio} is outside [0, 1); it is the share of tokens that skip the span")

    @property
    def blocks(self) -> int:
        """Blocks in the span."""
        return self.end - self.start

    def num_kept(self, num_tokens: int) -> int:
        """Tokens that go through the span: ``num_tokens - int(num_tokens * ratio)`` (at least 1)."""
        return num_tokens - int(num_tokens * self.ratio)

    def __call__(
        self, batch_size: int, num_tokens: int, *, generator: torch.Generator, device: torch.device | str | None = None
    ) -> RoutePlan:
        """Draw a plan for ``batch_size`` samples of ``num_tokens`` tokens reaching block ``start``.

        ``num_tokens`` is the model's token count ``n``, or, for a span in an MDT encoder
        during the masked pass, the kept count ``k`` (see the models' ``route_tokens``).
        """
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        if isinstance(num_tokens, bool) or not isinstance(num_tokens, int) or num_tokens < 1:
            raise ValueError(f"num_tokens must be a positive int, got {num_tokens!r}")
        noise = torch.rand(batch_size, num_tokens, generator=generator, device=generator.device)
        return self.plan_from_draws(noise, device)

    def plan_from_draws(self, noise: Float[Tensor, "b m"], device: torch.device | str | None = None) -> RoutePlan:
        """The plan given one uniform draw per token: the tokens of smallest draw go through the span.

        The kept ids are sorted (grid order), which the output does not depend on; at ratio 0
        they are ``0 .. m-1`` and the routed forward is the plain one exactly.
        """
        if noise.ndim != 2:
            raise ValueError(f"route noise must have shape (batch, num_tokens), got {tuple(noise.shape)}")
        k = self.num_kept(noise.shape[1])
        ids_keep = noise.argsort(dim=1)[:, :k].sort(dim=1).values
        target = torch.device(device) if device is not None else noise.device
        return RoutePlan(self.start, self.end, plan_from_ids_keep(ids_keep.to(target), noise.shape[1]))


def route_from_ids_keep(start: int, end: int, ids_keep: Int[Tensor, "b k"], num_tokens: int) -> RoutePlan:
    """A plan from given kept positions (e.g. an injected route): the others skip ``[start, end)``.

    Args:
        start: first routed block.
        end: one past the last routed block.
        ids_keep: ``(b, k)`` distinct positions in ``[0, num_tokens)`` of the tokens the span processes.
        num_tokens: tokens ``m`` reaching block ``start``.
    """
    check_span(start, end)
    validate_ids_keep(ids_keep, ids_keep.shape[0] if isinstance(ids_keep, Tensor) and ids_keep.ndim == 2 else -1, num_tokens)
    return RoutePlan(start, end, plan_from_ids_keep(ids_keep, num_tokens))


def as_routes(route: object) -> tuple[RoutePlan, ...]:
    """The drawn routes a forward's ``route`` argument names, as a tuple in block order.

    Args:
        route: ``None`` (no routing), one :class:`RoutePlan`, or a list or tuple of them
            whose spans are disjoint and in block order (TREAD's list of routes).

    Raises:
        TypeError: anything else.
        ValueError: overlapping or unordered spans.
    """
    if route is None:
        return ()
    routes = (route,) if isinstance(route, RoutePlan) else route
    if not isinstance(routes, (list, tuple)) or not all(isinstance(r, RoutePlan) for r in routes):
        raise TypeError(
            "route must be a RoutePlan (draw one with Route(start, end, ratio)(batch, n, generator=g)) or a list of them, "
            f"got {type(route).__name__}"
        )
    for a, b in pairwise(routes):
        if b.start < a.end:
            raise ValueError(
                f"route spans [{a.start}, {a.end}) and [{b.start}, {b.end}) overlap or are out of order; "
                "give disjoint spans in block order"
            )
    return tuple(routes)


def default_span(num_blocks: int, encoder_blocks: int | None = None) -> tuple[int, int]:
    """TREAD's span for a stack of ``num_blocks`` blocks: from block 2 up to and including block ``num_blocks - 4``.

    That is ``[2, num_blocks - 3)``: TREAD's DiT setting (blocks 2 to 8 of DiT-B/2's 12)
    keeps the first two and the last three blocks at full length. For an MDT, pass its
    ``encoder_blocks``: the span then also ends at the encoder's end at the latest
    (spans may not cross into the decoder; see ``MaskedDiffusionTransformer.check_route``).

    Raises:
        ValueError: fewer than 6 blocks (or a 2-block encoder), which leaves no such span.
    """
    end = num_blocks - 3 if encoder_blocks is None else min(num_blocks - 3, encoder_blocks)
    if end <= 2:
        raise ValueError(
            f"no default route span for {num_blocks} blocks" + ("" if encoder_blocks is None else f" ({encoder_blocks} in the encoder)")
            + "; it needs at least 6 blocks (3 in an encoder); give start and end yourself"
        )
    return 2, end
