"""Save a batch of images as one PNG grid (atomically)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from jaxtyping import Float
from PIL import Image
from torch import Tensor

from ..io import atomic_write
from .transforms import to_uint8

__all__ = ["save_image_grid", "grid_scale"]

MIN_TILE = 96
"""Pixels a grid tile is enlarged to at least (nearest-neighbour), so small images can be seen."""


def grid_scale(side: int, min_tile: int = MIN_TILE) -> int:
    """The integer ``scale`` for :func:`save_image_grid` that enlarges ``side``-pixel tiles to at least ``min_tile``.

    Args:
        side: the images' side in pixels.
        min_tile: the smallest tile side wanted (images this large or larger keep their size).

    Returns:
        ``ceil(min_tile / side)``, at least 1 (28 px digits: 4, 112 px tiles).
    """
    if side < 1:
        raise ValueError(f"side must be positive, got {side}")
    return max(1, math.ceil(min_tile / side))


def save_image_grid(
    images: Float[Tensor, "b c hh ww"],
    path: str | os.PathLike,
    nrow: int | None = None,
    padding: int = 2,
    scale: int = 1,
) -> Path:
    """Tile a batch into a grid and write it as a PNG; a reader never sees a partial file.

    Args:
        images: 1- or 3-channel images in [-1, 1].
        path: output ``.png`` path (parent folders are created).
        nrow: images per row; default ``ceil(sqrt(b))``.
        padding: black pixels between and around tiles (before scaling).
        scale: enlarge the grid by this integer factor, nearest-neighbour (every pixel
            becomes a ``scale x scale`` block), so small images stay sharp and visible.

    Returns:
        The written path.
    """
    b, c, h, w = images.shape
    if c not in (1, 3):
        raise ValueError(f"can only save 1- or 3-channel images as PNG, got {c} channels")
    if b == 0:
        raise ValueError("cannot save an empty batch as an image grid")
    nrow = nrow or math.ceil(math.sqrt(b))
    if nrow <= 0:
        raise ValueError(f"nrow must be positive, got {nrow}")
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be a positive int, got {scale!r}")
    ncol = math.ceil(b / nrow)
    tiles = to_uint8(images)  # (b, h, w, c)
    grid = torch.zeros(ncol * (h + padding) + padding, nrow * (w + padding) + padding, c, dtype=torch.uint8)
    for i in range(b):
        row, col = divmod(i, nrow)
        top, left = padding + row * (h + padding), padding + col * (w + padding)
        grid[top : top + h, left : left + w] = tiles[i]
    if scale > 1:
        grid = grid.repeat_interleave(scale, dim=0).repeat_interleave(scale, dim=1)
    array = grid.numpy()
    image = Image.fromarray(array[:, :, 0] if c == 1 else array)  # uint8 2-D -> "L", (h, w, 3) -> "RGB"
    return atomic_write(path, lambda p: image.save(p, format="PNG"))
