"""The built-in dataset: scikit-learn's 8x8 handwritten digits, upscaled, no download needed."""

from __future__ import annotations

import torch

from .in_memory import InMemoryImages

__all__ = ["DigitsDataset"]


class DigitsDataset(InMemoryImages):
    """The 1,797 handwritten digits of UCI/scikit-learn (``load_digits``), as images in [-1, 1].

    The data ships inside the scikit-learn wheel, so this runs offline; it is the
    default when a recipe gets no ``--data``. The 8x8 images (grey levels 0..16)
    are upscaled bilinearly to ``image_size``. As with every mdtblocks image
    dataset, ``flip=True`` doubles the length: index ``num_images + i`` is the
    mirror of image ``i``.

    Args:
        image_size: output side length (at least 8).
        channels: 1 (grey) or 3 (the grey image repeated, for RGB models).
        flip: add the mirrored copy of every image.
    """

    num_classes = 10
    classes = [str(i) for i in range(10)]

    def __init__(self, image_size: int = 16, channels: int = 1, flip: bool = True) -> None:
        if image_size < 8:
            raise ValueError(f"image_size must be at least the native 8 pixels, got {image_size}")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        from sklearn.datasets import load_digits  # deferred: scikit-learn is only needed here

        digits = load_digits()
        pixels = torch.as_tensor(digits.images, dtype=torch.float32)[:, None] / 16.0  # (n, 1, 8, 8) in [0, 1]
        super().__init__(pixels, torch.as_tensor(digits.target), image_size, channels, flip)
