"""adaLN-modulated output projection from tokens to per-patch pixel values."""

from __future__ import annotations

from jaxtyping import Float
from torch import Tensor, nn

from .modulated_norm import modulated_layer_norm

__all__ = ["FinalLayer"]


class FinalLayer(nn.Module):
    """LayerNorm, adaLN shift/scale from ``c``, then a linear map to ``p*p*out_channels`` values per token.

    Zero-initialised, so a fresh model predicts zero. ``cond_size`` is the width of
    ``c`` when it differs from the tokens' (MaskDiT's decoder); ``None`` for ``hidden_size``.
    """

    def __init__(self, hidden_size: int, patch_size: int, out_channels: int, cond_size: int | None = None) -> None:
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(cond_size or hidden_size, 2 * hidden_size))

    def forward(self, x: Float[Tensor, "b n d"], c: Float[Tensor, "b dc"]) -> Float[Tensor, "b n pixels"]:
        """Project each token to its patch values (order: patch row, patch column, channel)."""
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulated_layer_norm(x, shift, scale, self.norm_final.eps))

    def reset_parameters(self) -> None:
        """Zero everything that produces the output (adaLN-Zero)."""
        for layer in (self.adaLN_modulation[-1], self.linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
