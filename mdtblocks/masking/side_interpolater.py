"""Side-interpolater: fills masked positions with mask tokens and predicts them from the kept ones (MDT section 3.3)."""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from ..blocks.attention import AttentionBackend
from ..blocks.transformer_block import AdaLNBlock

__all__ = ["scatter_kept", "SideInterpolater"]


def scatter_kept(
    kept: Float[Tensor, "b k d"], ids_keep: Int[Tensor, "b k"], fill: Float[Tensor, "#b #n d"], num_tokens: int
) -> Float[Tensor, "b n d"]:
    """Place kept tokens at their grid positions and ``fill`` everywhere else."""
    b, _, d = kept.shape
    full = fill.to(kept.dtype).expand(b, num_tokens, d).clone()
    return full.scatter(1, ids_keep.unsqueeze(-1).expand(-1, -1, d), kept)


class SideInterpolater(nn.Module):
    """Mask tokens + side block(s) + the masked shortcut.

    Used only in the masked training pass. The encoder output of the ``k`` kept
    tokens is placed back on the full grid, masked positions get a learned mask
    token, the position table is added, and the side block(s) attend over the whole
    grid. The masked shortcut then keeps the side blocks' prediction only at masked
    positions; kept tokens pass through unchanged.

    Args:
        hidden_size: width ``d``.
        num_heads: attention heads of the side block(s).
        mlp_ratio: MLP width multiple.
        grid: patch grid (for the relative position bias).
        num_blocks: side blocks (1 in MDT and MDTv2).
        backend: attention kernel.
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        mlp_ratio: float,
        grid: tuple[int, int],
        num_blocks: int = 1,
        backend: AttentionBackend = "sdpa",
    ) -> None:
        super().__init__()
        self.mask_token = nn.Parameter(torch.zeros(1, 1, hidden_size))
        self.blocks = nn.ModuleList(
            AdaLNBlock(hidden_size, num_heads, mlp_ratio, grid=grid, backend=backend) for _ in range(num_blocks)
        )

    def forward(
        self,
        kept: Float[Tensor, "b k d"],
        c: Float[Tensor, "b d"],
        ids_keep: Int[Tensor, "b k"],
        pos: Float[Tensor, "1 n d"],
    ) -> Float[Tensor, "b n d"]:
        """Interpolate the full ``n``-token grid from the kept tokens."""
        n = pos.shape[1]
        x = scatter_kept(kept, ids_keep, self.mask_token, n) + pos
        before = x
        for block in self.blocks:
            x = block(x, c)
        masked = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device).scatter(1, ids_keep, False)
        # Masked shortcut: kept positions keep their input, masked ones take the side prediction.
        return torch.where(masked.unsqueeze(-1), x, before)

    def reset_parameters(self) -> None:
        """Init the side blocks (adaLN-Zero) and draw the mask token from N(0, 0.02)."""
        for block in self.blocks:
            block.reset_parameters()
        nn.init.normal_(self.mask_token, std=0.02)
