"""The routing block: applies drawn routes (:class:`~mdtblocks.masking.route.RoutePlan`) while a block loop runs."""

from __future__ import annotations

from typing import no_type_check

from jaxtyping import Float, Int
from torch import Tensor

from ..blocks.relative_bias import gather_relative_index
from .route import RoutePlan

__all__ = ["SpanRouter"]


# Built and called inside compiled forwards: the test suite's runtime type checks wrapped around
# its methods would break torch.compile's graph (plain functions are not affected).
@no_type_check
class SpanRouter:
    """Sets routed tokens aside at a span's first block and puts them back after its last.

    A backbone's block loop calls :meth:`enter` before and :meth:`leave` after each block;
    inputs produced outside a span that a block inside it consumes (MDTv2's long and
    dense shortcuts) go through :meth:`side`, and the relative-position index of the
    tokens present through :meth:`rel_index`. Without routes every method is the identity,
    so the loop is the plain model's.

    Args:
        routes: drawn routes with disjoint spans in block order (the model checks them);
            empty for no routing.
        offset: index of this loop's first block in the numbering the routes use (MDT
            numbers its encoder blocks, then its decoder blocks).
        rel_index: the loop's own ``(b, m, m)`` relative-position index (``None``: the full
            grid; MDT's masked pass: the index of the kept tokens).
        full_index: the full grid's ``(n, n)`` index, for models with a relative bias.
    """

    def __init__(
        self,
        routes: tuple[RoutePlan, ...] = (),
        offset: int = 0,
        rel_index: Int[Tensor, "b m m"] | None = None,
        full_index: Int[Tensor, "n n"] | None = None,
    ) -> None:
        self.routes = routes
        self.offset = offset
        self._outer_index = rel_index
        self._full_index = full_index
        self._span_index: Tensor | None = None
        self._at_start: Tensor | None = None

    def _route_at(self, i: int) -> RoutePlan | None:
        """The route whose span holds block ``i`` of this loop, if any."""
        j = self.offset + i
        for r in self.routes:
            if r.start <= j < r.end:
                return r
        return None

    def active(self, i: int) -> bool:
        """Whether block ``i`` (of this loop) lies inside a span."""
        return self._route_at(i) is not None

    def enter(self, i: int, h: Float[Tensor, "b m d"]) -> Float[Tensor, "b mk d"]:
        """Before block ``i``: at a span's start, keep ``h`` and return the tokens that go through."""
        r = self._route_at(i)
        if r is None or self.offset + i != r.start:
            return h
        self._at_start = h
        if self._full_index is not None:
            ids = r.ids_keep
            if self._outer_index is None:
                self._span_index = gather_relative_index(self._full_index, ids)
            else:  # the rows and columns of the kept tokens' index
                outer = self._outer_index
                rows = outer.gather(1, ids.unsqueeze(-1).expand(-1, -1, outer.shape[2]))
                self._span_index = rows.gather(2, ids.unsqueeze(1).expand(-1, ids.shape[1], -1))
        return r.gather(h)

    def leave(self, i: int, h: Float[Tensor, "b mk d"]) -> Float[Tensor, "b m d"]:
        """After block ``i``: at a span's end, put the routed tokens back unchanged."""
        r = self._route_at(i)
        if r is None or self.offset + i != r.end - 1:
            return h
        assert self._at_start is not None, "leave() at a span's end without enter() at its start"
        out = r.restore(h, self._at_start)
        self._at_start, self._span_index = None, None
        return out

    def side(self, i: int, tokens: Float[Tensor, "b m d"], produced_at: int = -1) -> Float[Tensor, "b mk d"]:
        """A side input of block ``i`` produced by block ``produced_at`` of this loop (-1: before it).

        Inside a span an input produced outside it is reduced to the tokens going through;
        one produced inside it already is.
        """
        r = self._route_at(i)
        if r is not None and (produced_at < 0 or self._route_at(produced_at) is not r):
            return r.gather(tokens)
        return tokens

    def rel_index(self, i: int) -> Int[Tensor, "b m m"] | None:
        """The relative-position index for block ``i``: its span's inside one, the loop's outside."""
        return self._span_index if self.active(i) else self._outer_index
