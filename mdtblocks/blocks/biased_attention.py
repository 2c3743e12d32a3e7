"""Self-attention with an additive bias straight from the fused qkv projection, in three batched products.

PyTorch's ``scaled_dot_product_attention`` has no fused CPU kernel that returns the
gradient of an additive mask, so on a CPU with MDT's learned relative position bias it
falls back to its math path: it scales ``q`` in a separate pass, adds the bias in
another, and guards every softmax row against being fully masked (three more passes
over the ``(b, h, n, n)`` scores). Here, per block,

- one copy lays ``q``, ``k``, ``v`` out head-major from the projection's output;
- ``baddbmm`` writes ``bias + q k^T / sqrt(e)`` in one product (the scale applied to the
  product, as the official MDT code does);
- the softmax is the only elementwise pass over the scores, and its output is the only
  ``(b, h, n, n)`` tensor kept for the backward pass;
- the backward pass computes ``dv``, ``dq``, ``dk`` straight into one buffer laid out as
  the projection's output, and the bias gradient is the scores' gradient, summed over
  the batch when the bias is shared by every sample.

The function is the same as :func:`~mdtblocks.blocks.attention.attention` with
``backend="math"`` (``tests/test_biased_attention.py`` checks value and every gradient in
float64).
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

__all__ = ["biased_attention"]


def _split(qkvp: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(3, b, h, n, e)`` -> three ``(b*h, n, e)`` views."""
    _, b, h, n, e = qkvp.shape
    return tuple(part.view(b * h, n, e) for part in qkvp.unbind(0))  # type: ignore[return-value]


class _BiasedAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, qkv: Tensor, bias: Tensor, num_heads: int) -> Tensor:
        with torch.autocast(qkv.device.type, enabled=False):  # inputs arrive in the dtype to compute in
            return _BiasedAttention._forward(ctx, qkv, bias, num_heads)

    @staticmethod
    def _forward(ctx: Any, qkv: Tensor, bias: Tensor, num_heads: int) -> Tensor:
        b, n, three_d = qkv.shape
        h, e = num_heads, three_d // (3 * num_heads)
        qkvp = qkv.view(b, n, 3, h, e).permute(2, 0, 3, 1, 4).contiguous()  # (3, b, h, n, e)
        q, k, v = _split(qkvp)
        scores = torch.empty(b, h, n, n, dtype=qkv.dtype, device=qkv.device)
        scores.copy_(bias.expand(b, h, n, n))
        scores = scores.view(b * h, n, n).baddbmm_(q, k.transpose(1, 2), alpha=e**-0.5)
        probs = torch.softmax(scores, dim=-1)
        del scores
        out = torch.bmm(probs, v)  # (b*h, n, e)
        ctx.save_for_backward(qkvp, probs)
        ctx.bias_shape = bias.shape
        return out.view(b, h, n, e).transpose(1, 2).reshape(b, n, h * e)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor, Tensor, None]:
        qkvp, probs = ctx.saved_tensors
        _, b, h, n, e = qkvp.shape
        q, k, v = _split(qkvp)
        grad_o = grad_out.reshape(b, n, h, e).transpose(1, 2).reshape(b * h, n, e)
        grad_qkvp = torch.empty_like(qkvp)
        grad_q, grad_k, grad_v = _split(grad_qkvp)
        torch.bmm(probs.transpose(1, 2), grad_o, out=grad_v)
        grad_scores = torch._softmax_backward_data(torch.bmm(grad_o, v.transpose(1, 2)), probs, -1, probs.dtype)
        scale = e**-0.5
        torch.baddbmm(grad_q, grad_scores, k, beta=0, alpha=scale, out=grad_q)
        torch.baddbmm(grad_k, grad_scores.transpose(1, 2), q, beta=0, alpha=scale, out=grad_k)
        grad_bias = grad_scores.view(b, h, n, n).sum_to_size(ctx.bias_shape)
        grad_qkv = grad_qkvp.permute(1, 3, 0, 2, 4).reshape(b, n, 3 * h * e)
        return grad_qkv, grad_bias, None


def biased_attention(
    qkv: Float[Tensor, "b n three_d"], bias: Float[Tensor, "#b h n n"], num_heads: int
) -> Float[Tensor, "b n d"]:
    """``softmax(q k^T / sqrt(e) + bias) v`` for the packed projection ``qkv = [q | k | v]``, heads merged back.

    Args:
        qkv: output of the fused ``Linear(d, 3d)``; its last axis splits as ``(3, h, e)``.
        bias: additive pre-softmax bias, one per sample or broadcast over the batch; same dtype as ``qkv``.
        num_heads: heads ``h``.

    Returns:
        The attention output with its heads concatenated, ``(b, n, h * e)``, ready for the output projection.
    """
    if qkv.shape[-1] % (3 * num_heads):
        raise ValueError(f"qkv width {qkv.shape[-1]} is not 3 * num_heads ({num_heads}) * head width")
    if bias.dtype != qkv.dtype:
        raise TypeError(f"bias dtype {bias.dtype} differs from qkv dtype {qkv.dtype}; cast it first")
    return _BiasedAttention.apply(qkv, bias, num_heads)
