"""adaLN-Zero transformer block (DiT), optionally fusing a skip input (MDTv2 long and dense shortcuts)."""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from .attention import AttentionBackend, SelfAttention
from .mlp import Mlp
from .modulated_norm import modulated_layer_norm

__all__ = ["AdaLNBlock"]


class AdaLNBlock(nn.Module):
    """Pre-norm attention + MLP block whose norms are modulated by the conditioning vector.

    The six modulation vectors (shift, scale, gate for attention and for the MLP)
    come from ``Linear(SiLU(c))``; zero-initialising that layer makes the block the
    identity at init (adaLN-Zero, DiT section 3.2).

    With ``fuses_skip=True`` the block first fuses a second token stream:
    ``x <- Linear([x, skip])``. MDTv2 uses this for the long shortcuts across its
    encoder and for the dense shortcut of the input tokens into each decoder block.

    Args:
        hidden_size: width ``d``.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width as a multiple of ``d``.
        grid: patch grid for a relative position bias (MDT), or ``None`` (DiT).
        fuses_skip: whether the block takes a skip input (a tensor passed to :meth:`forward` as ``skip``).
        backend: attention kernel.
        cond_size: width of the conditioning vector ``c``; ``None`` for ``hidden_size``
            (MaskDiT's narrower decoder blocks are conditioned on the encoder-width ``c``).
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        grid: tuple[int, int] | None = None,
        fuses_skip: bool = False,
        backend: AttentionBackend = "sdpa",
        cond_size: int | None = None,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = SelfAttention(hidden_size, num_heads, grid=grid, backend=backend)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(cond_size or hidden_size, 6 * hidden_size))
        self.skip_linear = nn.Linear(2 * hidden_size, hidden_size) if fuses_skip else None

    def forward(
        self,
        x: Float[Tensor, "b n d"],
        c: Float[Tensor, "b dc"],
        skip: Float[Tensor, "b n d"] | None = None,
        rel_index: Int[Tensor, "b n n"] | None = None,
    ) -> Float[Tensor, "b n d"]:
        """Update tokens ``x`` under conditioning ``c``; ``skip`` is required iff the block was built with ``fuses_skip=True``."""
        if self.skip_linear is not None:
            if skip is None:
                raise ValueError("this block was built with fuses_skip=True and needs a skip input")
            x = self.skip_linear(torch.cat([x, skip], dim=-1))
        elif skip is not None:
            raise ValueError("this block was built with fuses_skip=False but got a skip input")
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = self.adaLN_modulation(c).chunk(6, dim=1)
        # x + gate * f(x) as one addcmul: one pass over the tokens instead of two
        x = torch.addcmul(x, gate_a.unsqueeze(1), self.attn(modulated_layer_norm(x, shift_a, scale_a, self.norm1.eps), rel_index))
        x = torch.addcmul(x, gate_m.unsqueeze(1), self.mlp(modulated_layer_norm(x, shift_m, scale_m, self.norm2.eps)))
        return x

    def reset_parameters(self) -> None:
        """Xavier-uniform linears with zero bias, then zero the adaLN output (adaLN-Zero)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        if self.attn.rel_pos_bias is not None:
            self.attn.rel_pos_bias.reset_parameters()
        nn.init.zeros_(self.adaLN_modulation[-1].weight)
        nn.init.zeros_(self.adaLN_modulation[-1].bias)
