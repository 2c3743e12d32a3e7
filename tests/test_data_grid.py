"""Image grids: layout, nearest-neighbour enlargement, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mdtblocks.data import save_image_grid


def test_grid_layout_and_nearest_neighbour_scale(tmp_path) -> None:
    images = torch.full((3, 1, 2, 2), -1.0)
    images[1] = 1.0  # white second tile
    images[2, :, 0, 1] = 1.0  # one white pixel in the third
    plain = np.asarray(Image.open(save_image_grid(images, tmp_path / "a.png", nrow=3, padding=1)))
    assert plain.shape == (4, 10)
    assert (plain[1:3, 4:6] == 255).all() and plain[1, 8] == 255 and plain[2, 8] == 0 and plain[0].max() == 0
    big = np.asarray(Image.open(save_image_grid(images, tmp_path / "b.png", nrow=3, padding=1, scale=3)))
    assert big.shape == (12, 30)
    np.testing.assert_array_equal(big, plain.repeat(3, axis=0).repeat(3, axis=1))
    with pytest.raises(ValueError, match="scale must be a positive int, got 0"):
        save_image_grid(images, tmp_path / "c.png", scale=0)
