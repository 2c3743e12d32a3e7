"""adaLN's ``LayerNorm(x) * (1 + scale) + shift`` with the normalised tokens recomputed in the backward pass.

Written as two autograd operations, the normalised tokens ``LayerNorm(x)`` are kept for the
scale's gradient although the norm's input, which autograd keeps anyway, determines them:
one ``d``-wide tensor per norm, two of the roughly twenty a block keeps per token. In
full-precision training :func:`modulated_layer_norm` keeps only the input and the
per-token mean and reciprocal deviation, and recomputes the normalised tokens in the
backward pass (one cheap elementwise pass over a ``(b, n, d)`` tensor). The forward pass
runs the same two kernels as before, so its output is bit for bit the same.
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from .mlp import _autocast_enabled

__all__ = ["modulate", "modulated_layer_norm"]


def modulate(x: Float[Tensor, "b n d"], shift: Float[Tensor, "b d"], scale: Float[Tensor, "b d"]) -> Float[Tensor, "b n d"]:
    """Adaptive layer-norm modulation ``x * (1 + scale) + shift``, per sample."""
    return torch.addcmul(shift.unsqueeze(1), x, 1 + scale.unsqueeze(1))  # one pass instead of two


class _ModulatedLayerNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, shift: Tensor, scale: Tensor, eps: float) -> Tensor:
        normed, mean, rstd = torch.native_layer_norm(x, x.shape[-1:], None, None, eps)
        out = modulate(normed, shift, scale)
        ctx.save_for_backward(x, mean, rstd, scale)
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None, None]:
        x, mean, rstd, scale = ctx.saved_tensors
        grad_shift = grad_out.sum(1) if ctx.needs_input_grad[1] else None
        grad_scale = None
        if ctx.needs_input_grad[2]:
            normed = (x - mean).mul_(rstd)  # the recomputation
            grad_scale = normed.mul_(grad_out).sum(1)
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_normed = grad_out * (1 + scale.unsqueeze(1))
            grad_x = torch.ops.aten.native_layer_norm_backward(
                grad_normed, x, x.shape[-1:], mean, rstd, None, None, [True, False, False]
            )[0]
        return grad_x, grad_shift, grad_scale, None


def modulated_layer_norm(
    x: Float[Tensor, "b n d"], shift: Float[Tensor, "b d"], scale: Float[Tensor, "b d"], eps: float = 1e-6
) -> Float[Tensor, "b n d"]:
    """``LayerNorm(x) * (1 + scale) + shift`` (no affine parameters in the norm), per sample.

    In training outside autocast and outside ``torch.compile`` (which plans its own
    recomputation), the normalised tokens are not kept for the backward pass; otherwise this
    is the plain composition. Both give the same output and gradients.
    """
    if (
        torch.is_grad_enabled()
        and (x.requires_grad or shift.requires_grad or scale.requires_grad)
        and not _autocast_enabled(x.device.type)
        and not torch.compiler.is_compiling()
    ):
        return _ModulatedLayerNorm.apply(x, shift, scale, eps)
    return modulate(torch.nn.functional.layer_norm(x, x.shape[-1:], eps=eps), shift, scale)
