"""The frozen-encoder interface: images in, patch features on the backbone's token grid out, never trained."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

__all__ = ["FrozenEncoder", "resample_to_grid", "to_unit_rgb"]


def to_unit_rgb(images: Float[Tensor, "b c hh ww"]) -> Float[Tensor, "b 3 hh ww"]:
    """Library images (float, channels first, in ``[-1, 1]``, 1 or 3 channels) to RGB in ``[0, 1]``, float32."""
    if not isinstance(images, Tensor) or not images.is_floating_point() or images.ndim != 4 or images.shape[1] not in (1, 3):
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a float (b, 1 or 3, h, w) tensor in [-1, 1], got {shape}")
    x = (images.float().clamp(-1.0, 1.0) + 1.0) / 2.0
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def resample_to_grid(
    features: Float[Tensor, "b e fh fw"], grid: tuple[int, int], source: str = "the encoder"
) -> Float[Tensor, "b n e"]:
    """Bring a feature map to the token grid ``(gh, gw)`` and flatten it row-major, as the backbone orders its tokens.

    Equal grids pass unchanged; a finer feature grid is averaged over the area each
    token covers (``adaptive_avg_pool2d``). A coarser one is refused: upsampling would
    invent detail the encoder never saw.

    Raises:
        ValueError: the feature grid is coarser than the token grid in some direction.
    """
    fh, fw = features.shape[-2:]
    gh, gw = grid
    if fh < gh or fw < gw:
        raise ValueError(
            f"{source} gives a {fh}x{fw} feature grid, which cannot be resampled to the {gh}x{gw} token grid "
            f"(only averaging down is supported); raise the encoder's resolution or use a coarser token grid"
        )
    if (fh, fw) != (gh, gw):
        features = F.adaptive_avg_pool2d(features, (gh, gw))
    return features.flatten(2).transpose(1, 2)  # (b, gh*gw, e), row-major


class FrozenEncoder(nn.Module):
    """Base of the alignment encoders: carries its preprocessing, is never trained, and says what it is.

    Subclasses implement :meth:`feature_map` (library images to the encoder's patch
    feature map, their own resizing and normalisation included) and set
    :attr:`feature_dim`. The parameters are frozen at construction, the module stays in
    eval mode (``train()`` is a no-op), and :meth:`forward` runs without autograd, so
    no gradient ever reaches the encoder.

    Attributes:
        feature_dim: width ``e`` of the features.
    """

    feature_dim: int

    def freeze(self) -> None:
        """Turn off gradients of every parameter and switch to eval mode (call at the end of ``__init__``)."""
        for p in self.parameters():
            p.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> FrozenEncoder:
        """Stay in eval mode whatever a caller asks: the encoder's normalisation statistics are part of it."""
        return super().train(False)

    def feature_map(self, images: Float[Tensor, "b c hh ww"]) -> Float[Tensor, "b e fh fw"]:
        """Patch features of the images, as a map (no class token); subclasses implement it."""
        raise NotImplementedError

    def record(self) -> dict[str, Any]:
        """JSON description of the encoder and its preprocessing (``"kind"`` first): what a feature cache stores."""
        raise NotImplementedError

    @torch.no_grad()
    def feature_maps(self, images: Float[Tensor, "b c hh ww"]) -> Float[Tensor, "b e fh fw"]:
        """The encoder's own feature grid, float32, without autograd (what a latent cache stores)."""
        device = next(iter(self.parameters()), torch.empty(0)).device
        return self.feature_map(images.to(device)).float()

    @torch.no_grad()
    def forward(self, images: Float[Tensor, "b c hh ww"], grid: tuple[int, int]) -> Float[Tensor, "b n e"]:
        """Features of clean images on the token grid ``(gh, gw)``: ``(b, gh * gw, feature_dim)`` float32.

        Args:
            images: float ``(b, 1 or 3, h, w)`` in ``[-1, 1]`` (the library's image
                convention, grey repeated to RGB); moved to the encoder's device.
            grid: the backbone's patch grid (``model.config.grid``).
        """
        return resample_to_grid(self.feature_maps(images), grid, type(self).__name__)
