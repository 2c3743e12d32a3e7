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

Forward and backward are registered custom operators (``mdtblocks::biased_attention_forward``
and ``..._backward``), so a compiled model runs these same kernels and fuses only what
lies around them.

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


# Registered as custom operators, so that ``torch.compile`` calls these kernels as they are.
# Left to itself, the compiler inlines the bias-table gather into a fused softmax and
# recomputes it in each of the softmax's passes over the scores: on a CPU that kernel took
# about five times the eager softmax and bias copy together (MDTv2-S/2, fp32).
@torch.library.custom_op(
    "mdtblocks::biased_attention_forward", mutates_args=(), schema="(Tensor qkv, Tensor bias, int num_heads) -> (Tensor, Tensor, Tensor)"
)
def _forward(qkv: Tensor, bias: Tensor, num_heads: int) -> tuple[Tensor, Tensor, Tensor]:
    """Attention output ``(b, n, h e)``, plus the head-major ``q, k, v`` and the softmax kept for the backward pass."""
    with torch.autocast(qkv.device.type, enabled=False):  # inputs arrive in the dtype to compute in
        b, n, three_d = qkv.shape
        h, e = num_heads, three_d // (3 * num_heads)
        qkvp = qkv.view(b, n, 3, h, e).permute(2, 0, 3, 1, 4).clone(memory_format=torch.contiguous_format)  # (3, b, h, n, e), never a view of qkv
        q, k, v = _split(qkvp)
        scores = torch.empty(b, h, n, n, dtype=qkv.dtype, device=qkv.device)
        scores.copy_(bias.expand(b, h, n, n))
        scores = scores.view(b * h, n, n).baddbmm_(q, k.transpose(1, 2), alpha=e**-0.5)
        probs = torch.softmax(scores, dim=-1)
        del scores
        out = torch.bmm(probs, v)  # (b*h, n, e)
        return out.view(b, h, n, e).transpose(1, 2).reshape(b, n, h * e), qkvp, probs


@_forward.register_fake
def _(qkv: Tensor, bias: Tensor, num_heads: int) -> tuple[Tensor, Tensor, Tensor]:
    b, n, three_d = qkv.shape
    h, e = num_heads, three_d // (3 * num_heads)
    return qkv.new_empty(b, n, h * e), qkv.new_empty(3, b, h, n, e), qkv.new_empty(b * h, n, n)


@torch.library.custom_op(
    "mdtblocks::biased_attention_backward",
    mutates_args=(),
    schema="(Tensor grad_out, Tensor qkvp, Tensor probs, SymInt bias_batch) -> (Tensor, Tensor)",
)
def _backward(grad_out: Tensor, qkvp: Tensor, probs: Tensor, bias_batch: int | torch.SymInt) -> tuple[Tensor, Tensor]:
    """Gradients of the packed projection ``(b, n, 3 h e)`` and of the bias ``(bias_batch, h, n, n)``."""
    with torch.autocast(qkvp.device.type, enabled=False):
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
        grad_bias = grad_scores.view(b, h, n, n)
        grad_bias = grad_bias.sum(0, keepdim=True) if bias_batch == 1 and b != 1 else grad_bias
        grad_qkv = grad_qkvp.permute(1, 3, 0, 2, 4).reshape(b, n, 3 * h * e)
        return grad_qkv, grad_bias


@_backward.register_fake
def _(grad_out: Tensor, qkvp: Tensor, probs: Tensor, bias_batch: int | torch.SymInt) -> tuple[Tensor, Tensor]:
    _, b, h, n, e = qkvp.shape
    return qkvp.new_empty(b, n, 3 * h * e), qkvp.new_empty(bias_batch, h, n, n)


def _setup_context(ctx: Any, inputs: tuple[Tensor, Tensor, int], output: tuple[Tensor, Tensor, Tensor]) -> None:
    ctx.save_for_backward(output[1], output[2])
    ctx.bias_batch = inputs[1].shape[0]


def _autograd_backward(ctx: Any, grad_out: Tensor, _grad_qkvp: Tensor, _grad_probs: Tensor) -> tuple[Tensor, Tensor, None]:
    qkvp, probs = ctx.saved_tensors
    grad_qkv, grad_bias = _backward(grad_out, qkvp, probs, ctx.bias_batch)
    return grad_qkv, grad_bias, None


_forward.register_autograd(_autograd_backward, setup_context=_setup_context)


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
    return _forward(qkv, bias, num_heads)[0]
