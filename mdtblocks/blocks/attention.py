"""Multi-head self-attention with an optional additive bias and interchangeable kernels.

Backends: ``"sdpa"`` (``torch.nn.functional.scaled_dot_product_attention``, default),
``"xformers"`` (``xformers.ops.memory_efficient_attention``, CUDA only, optional extra),
and ``"math"`` (explicit softmax, the reference). All compute the same function.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from jaxtyping import Float, Int
from torch import Tensor, nn

from .biased_attention import biased_attention
from .linear import linear
from .relative_bias import RelativePositionBias

__all__ = ["AttentionBackend", "BACKENDS", "attention", "SelfAttention"]

AttentionBackend = Literal["sdpa", "xformers", "math"]
"""Name of an attention kernel: ``"sdpa"`` (default), ``"xformers"`` (CUDA, optional extra) or ``"math"`` (reference)."""
BACKENDS: tuple[str, ...] = ("sdpa", "xformers", "math")
"""Every accepted :data:`AttentionBackend` name."""


def _math(q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None) -> Tensor:
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
    if bias is not None:
        scores = scores + bias
    return scores.softmax(dim=-1) @ v


def _xformers(q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None) -> Tensor:
    try:
        import xformers.ops as xops  # imported only when chosen
    except ImportError as err:  # pragma: no cover - depends on the optional extra
        raise ImportError("attention backend 'xformers' needs the optional extra: pip install 'mdtblocks[xformers]'") from err
    if q.device.type != "cuda":
        raise ValueError(f"attention backend 'xformers' runs on CUDA only, got tensors on {q.device}; use 'sdpa'")
    b, h, n, _ = q.shape
    attn_bias = None
    if bias is not None:
        # xformers wants a (b, h, q, kv) bias whose storage rows are 8-aligned: pad then slice.
        pad = (-n) % 8
        full = torch.zeros(b, h, n, n + pad, dtype=q.dtype, device=q.device)
        attn_bias = full[..., :n]
        attn_bias.copy_(bias.expand(b, h, n, n))
    out = xops.memory_efficient_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_bias=attn_bias
    )
    return out.transpose(1, 2)


def attention(
    q: Float[Tensor, "b h q e"],
    k: Float[Tensor, "b h kv e"],
    v: Float[Tensor, "b h kv e"],
    bias: Float[Tensor, "#b #h q kv"] | None = None,
    backend: AttentionBackend = "sdpa",
) -> Float[Tensor, "b h q e"]:
    """Scaled dot-product attention ``softmax(q k^T / sqrt(e) + bias) v`` with the chosen kernel.

    Args:
        q: per-head queries.
        k: per-head keys.
        v: per-head values.
        bias: additive pre-softmax bias, broadcast over batch and heads; cast to ``q``'s dtype.
        backend: one of :data:`BACKENDS`.
    """
    if bias is not None:
        bias = bias.to(q.dtype)
    if backend == "sdpa":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    if backend == "math":
        return _math(q, k, v, bias)
    if backend == "xformers":
        return _xformers(q, k, v, bias)
    raise ValueError(f"unknown attention backend {backend!r}; expected one of {BACKENDS}")


def _needs_grad(*tensors: Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


class SelfAttention(nn.Module):
    """Multi-head self-attention (fused qkv projection with bias, output projection).

    Args:
        hidden_size: width ``d``; must be divisible by ``num_heads``.
        num_heads: heads ``h``.
        grid: patch-grid size for a learned relative position bias, or ``None`` for none (DiT).
        backend: attention kernel, see :func:`attention`; may be changed after construction.
    """

    def __init__(
        self, hidden_size: int, num_heads: int, grid: tuple[int, int] | None = None, backend: AttentionBackend = "sdpa"
    ) -> None:
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}")
        if backend not in BACKENDS:
            raise ValueError(f"unknown attention backend {backend!r}; expected one of {BACKENDS}")
        self.num_heads = num_heads
        self.backend: AttentionBackend = backend
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.proj = nn.Linear(hidden_size, hidden_size)
        self.rel_pos_bias = RelativePositionBias(grid, num_heads) if grid is not None else None

    def forward(
        self, x: Float[Tensor, "b n d"], rel_index: Int[Tensor, "b n n"] | None = None
    ) -> Float[Tensor, "b n d"]:
        """Attend over the ``n`` tokens of ``x``.

        ``rel_index`` selects bias-table rows for the tokens present (see
        :func:`~mdtblocks.blocks.relative_bias.gather_relative_index`); ``None`` means the full grid.
        """
        qkv = self.qkv(x)
        bias = None
        if self.rel_pos_bias is not None:
            bias = self.rel_pos_bias(rel_index)
            if self.backend == "sdpa" and x.device.type == "cpu" and _needs_grad(qkv, bias):
                # PyTorch's CPU SDPA has no fused kernel with a bias gradient (it falls back to
                # its math path with extra passes over the scores, compiled or not); see biased_attention.
                # Without gradients its fused flash kernel takes the bias as an additive mask.
                return linear(self.proj, biased_attention(qkv, bias.to(qkv.dtype), self.num_heads))
        q, k, v = rearrange(qkv, "b n (three h e) -> three b h n e", three=3, h=self.num_heads)
        out = attention(q, k, v, bias, self.backend)
        return linear(self.proj, rearrange(out, "b h n e -> b n (h e)"))
