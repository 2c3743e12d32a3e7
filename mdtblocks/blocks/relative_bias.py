"""Learned relative position bias over a 2-D patch grid (BEiT table, used by MDT in every attention layer)."""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

__all__ = ["relative_position_index", "gather_relative_index", "RelativePositionBias"]


def relative_position_index(grid: tuple[int, int]) -> Int[Tensor, "n n"]:
    """Row of the bias table for every (query, key) token pair of a row-major ``(gh, gw)`` grid.

    The offset ``(dy, dx)`` maps to ``(dy + gh - 1) * (2 gw - 1) + (dx + gw - 1)``; the
    table has 3 extra rows after the ``(2gh-1)(2gw-1)`` offsets (BEiT's class-token slots,
    unused here but present in MDT checkpoints).
    """
    gh, gw = grid
    rows, cols = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
    rows, cols = rows.reshape(-1), cols.reshape(-1)
    dy = rows[:, None] - rows[None, :] + gh - 1
    dx = cols[:, None] - cols[None, :] + gw - 1
    return dy * (2 * gw - 1) + dx


def gather_relative_index(full_index: Int[Tensor, "n n"], ids_keep: Int[Tensor, "b k"]) -> Int[Tensor, "b k k"]:
    """Table rows for the kept tokens only: ``full_index[ids_keep[b, i], ids_keep[b, j]]``.

    Built once per forward from indices and shared by every block, instead of
    materialising and gathering the full ``(b, h, n, n)`` bias in each block.
    """
    return full_index[ids_keep[:, :, None], ids_keep[:, None, :]]


class RelativePositionBias(nn.Module):
    """A per-head learned bias indexed by the relative offset of two patches.

    Args:
        grid: patch-grid size ``(gh, gw)``.
        num_heads: heads ``h``; the table has shape ``((2gh-1)(2gw-1)+3, h)``.
    """

    def __init__(self, grid: tuple[int, int], num_heads: int) -> None:
        super().__init__()
        self.grid = tuple(grid)
        self.num_heads = num_heads
        num_rows = (2 * grid[0] - 1) * (2 * grid[1] - 1) + 3
        self.relative_position_bias_table = nn.Parameter(torch.zeros(num_rows, num_heads))
        self.register_buffer("index", relative_position_index(self.grid), persistent=False)

    def forward(
        self, index: Int[Tensor, "n n"] | Int[Tensor, "b k k"] | None = None
    ) -> Float[Tensor, "1 h n n"] | Float[Tensor, "b h k k"]:
        """The additive attention bias for the full grid (``index=None``, batch axis 1) or for given table rows."""
        idx = self.index.unsqueeze(0) if index is None else index
        bias = self.relative_position_bias_table[idx]  # (..., q, kv, h)
        return bias.movedim(-1, -3)

    def reset_parameters(self) -> None:
        """Truncated normal, std 0.02 (BEiT/MDT init)."""
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
