"""Fixed 2-D sine-cosine position table (MAE/DiT layout)."""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

__all__ = ["sincos_1d", "sincos_2d"]


def sincos_1d(dim: int, positions: Float[Tensor, "m"]) -> Float[Tensor, "m {dim}"]:
    """``[sin | cos]`` features of 1-D positions, frequencies ``10000^(-2i/dim)``. Computed in float64."""
    if dim % 2:
        raise ValueError(f"sincos_1d needs an even dim, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0))
    out = positions.to(torch.float64).reshape(-1, 1) * omega[None]
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)


def sincos_2d(dim: int, grid: tuple[int, int]) -> Float[Tensor, "n {dim}"]:
    """Position table for a row-major ``(gh, gw)`` patch grid, shape ``(gh*gw, dim)``, float32.

    The first half of the features encodes the column (x) and the second half the
    row (y), matching the table the official DiT/MDT initialise from.
    """
    if dim % 4:
        raise ValueError(f"sincos_2d needs dim divisible by 4, got {dim}")
    gh, gw = grid
    rows, cols = torch.meshgrid(torch.arange(gh, dtype=torch.float64), torch.arange(gw, dtype=torch.float64), indexing="ij")
    emb = torch.cat([sincos_1d(dim // 2, cols.reshape(-1)), sincos_1d(dim // 2, rows.reshape(-1))], dim=1)
    return emb.float()
