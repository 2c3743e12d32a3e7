"""Small labelled image sets held in memory as one tensor (the built-in digits, MNIST-5k)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor
from torch.utils.data import Dataset

__all__ = ["InMemoryImages"]


class InMemoryImages(Dataset):
    """``(image, label)`` pairs from grey levels in [0, 1], stored as images in [-1, 1].

    As in every mdtblocks image dataset, ``flip=True`` doubles the length: index
    ``num_images + i`` is the mirror of image ``i``. ``num_skipped`` is always 0 (the
    counter the trainer reads from folder datasets).

    Args:
        pixels: ``(n, 1, h, w)`` grey levels in [0, 1].
        labels: ``(n,)`` class labels.
        image_size: output side; other sizes than ``h`` are resized bilinearly.
        channels: 1 (grey) or 3 (the grey image repeated).
        flip: add the mirrored copy of every image.
    """

    def __init__(
        self, pixels: Float[Tensor, "n 1 h w"], labels: Int[Tensor, " n"], image_size: int, channels: int, flip: bool
    ) -> None:
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels!r}")
        if pixels.shape[-1] != image_size or pixels.shape[-2] != image_size:
            pixels = F.interpolate(pixels, size=(image_size, image_size), mode="bilinear", align_corners=False)
        self.images = (pixels.clamp(0.0, 1.0) * 2.0 - 1.0).expand(-1, channels, -1, -1).contiguous()
        self.labels = labels.to(torch.int64)
        self.image_size = image_size
        self.channels = channels
        self.flip = flip
        self.num_images = len(self.labels)
        self.num_skipped = 0

    def __len__(self) -> int:
        return 2 * self.num_images if self.flip else self.num_images

    def __getitem__(self, index: int) -> tuple[Float[Tensor, "c hh ww"], int]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of length {len(self)}")
        image = self.images[index % self.num_images]
        if index >= self.num_images:
            image = image.flip(-1)
        return image.clone(), int(self.labels[index % self.num_images])
