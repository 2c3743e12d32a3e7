"""Convolutional patchify of an image into tokens, and its inverse."""

from __future__ import annotations

from einops import rearrange
from jaxtyping import Float
from torch import Tensor, nn

__all__ = ["PatchEmbed", "patchify", "unpatchify"]


class PatchEmbed(nn.Module):
    """Split a ``(b, c, hh, ww)`` image into ``p x p`` patches and project each to ``d``.

    Equivalent to a strided convolution (the ViT/DiT patch embedding); the token
    order is row-major over the patch grid.

    Args:
        patch_size: side ``p`` of a square patch, in pixels (or latent cells).
        in_channels: channels ``c`` of the input.
        hidden_size: output width ``d``.
    """

    def __init__(self, patch_size: int, in_channels: int, hidden_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.in_channels = in_channels
        self.proj = nn.Conv2d(in_channels, hidden_size, kernel_size=patch_size, stride=patch_size, bias=True)

    def forward(self, x: Float[Tensor, "b c hh ww"]) -> Float[Tensor, "b n d"]:
        """Embed patches; ``n = (hh / p) * (ww / p)``."""
        return rearrange(self.proj(x), "b d gh gw -> b (gh gw) d")

    def reset_parameters(self) -> None:
        """Xavier-uniform over the flattened kernel, as for a linear layer (DiT init)."""
        w = self.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.proj.bias)


def unpatchify(
    x: Float[Tensor, "b n pixels"], patch_size: int, channels: int, grid: tuple[int, int]
) -> Float[Tensor, "b c hh ww"]:
    """Inverse of patchify: tokens of ``p*p*c`` values (order ``p, q, c``) back to an image.

    Args:
        x: per-token patch values, last axis ordered (row in patch, column in patch, channel)
            as the official final layers emit them.
        patch_size: side ``p`` of a patch.
        channels: channels ``c`` of the output.
        grid: patch-grid size ``(gh, gw)``; ``n`` must equal ``gh * gw``.
    """
    gh, gw = grid
    if x.shape[1] != gh * gw or x.shape[2] != patch_size * patch_size * channels:
        raise ValueError(
            f"unpatchify got tokens of shape {tuple(x.shape)}, expected (b, {gh * gw}, {patch_size * patch_size * channels})"
        )
    return rearrange(x, "b (gh gw) (p q c) -> b c (gh p) (gw q)", gh=gh, gw=gw, p=patch_size, q=patch_size, c=channels)


def patchify(x: Float[Tensor, "b c hh ww"], patch_size: int) -> Float[Tensor, "b n pixels"]:
    """Raw (unprojected) patches in the layout :func:`unpatchify` inverts."""
    return rearrange(x, "b c (gh p) (gw q) -> b (gh gw) (p q c)", p=patch_size, q=patch_size)

