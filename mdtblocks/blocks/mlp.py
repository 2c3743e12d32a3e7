"""The transformer feed-forward (fc1, tanh GELU, fc2), keeping only fc1's output for the backward pass.

Autograd would keep both the fc1 output (for GELU's gradient) and the GELU output (for
fc2's weight gradient): ``2 * mlp_hidden`` floats per token, the largest activations of a
block (8 of about 24 ``d``-wide tensors at ``mlp_ratio=4``). In full-precision training
:class:`Mlp` keeps only the first and recomputes GELU in the backward pass, which costs
one elementwise pass and saves a sixth of the activation memory of a training step.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from .gelu import gelu_tanh_, gelu_tanh_as_sigmoid
from .linear import linear

__all__ = ["Mlp"]


def _autocast_enabled(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except RuntimeError:  # a device type without autocast (meta): nothing is autocast there
        return False


class _GeluMlp(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor) -> Tensor:
        hidden = F.linear(x, w1, b1)
        out = F.linear(F.gelu(hidden, approximate="tanh"), w2, b2)
        ctx.save_for_backward(x, hidden, w1, w2)
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        x, hidden, w1, w2 = ctx.saved_tensors
        grad_out2 = grad_out.reshape(-1, grad_out.shape[-1])
        x2, hidden2 = x.reshape(-1, x.shape[-1]), hidden.reshape(-1, hidden.shape[-1])
        grad_w2 = grad_out2.t() @ F.gelu(hidden2, approximate="tanh")  # the recomputation
        grad_b2 = grad_out2.sum(0)
        grad_hidden = torch.ops.aten.gelu_backward(grad_out2 @ w2, hidden2, approximate="tanh")
        grad_w1 = grad_hidden.t() @ x2
        grad_b1 = grad_hidden.sum(0)
        grad_x = (grad_hidden @ w1).view(x.shape)
        return grad_x, grad_w1, grad_b1, grad_w2, grad_b2


class Mlp(nn.Module):
    """Two-layer MLP with tanh-approximated GELU (DiT/MDT feed-forward).

    Without gradients on a CPU, in fp32 or fp64, fc1 runs without its bias and
    :func:`~mdtblocks.blocks.gelu.gelu_tanh_` adds it and applies GELU in place, block by
    block: no second activation-sized tensor and no separate pass for the bias.

    Args:
        hidden_size: width ``d``.
        mlp_hidden: inner width.

    Attributes:
        recompute_activation: in training outside autocast, keep only fc1's output and
            recompute GELU in the backward pass (default ``True``; the same function and
            gradients, less memory). Set ``False`` to trade that memory for one elementwise pass.
    """

    def __init__(self, hidden_size: int, mlp_hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(hidden_size, mlp_hidden)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(mlp_hidden, hidden_size)
        self.recompute_activation = True

    def forward(self, x: Float[Tensor, "b n d"]) -> Float[Tensor, "b n d"]:
        """Apply fc1, GELU, fc2 token-wise."""
        if (
            self.recompute_activation
            and torch.is_grad_enabled()
            and not _autocast_enabled(x.device.type)
            and not torch.compiler.is_compiling()  # the compiler plans its own recomputation
        ):
            return _GeluMlp.apply(x, self.fc1.weight, self.fc1.bias, self.fc2.weight, self.fc2.bias)
        if torch.compiler.is_compiling():
            return linear(self.fc2, gelu_tanh_as_sigmoid(linear(self.fc1, x)))
        if (
            not torch.is_grad_enabled()
            and x.device.type == "cpu"  # on a GPU the block-by-block passes would be many small launches
            and x.dtype in (torch.float32, torch.float64)
            and not _autocast_enabled(x.device.type)
        ):
            # inference: fc1's output is not needed again; its bias goes in block by block with the GELU
            # (bf16 stays with PyTorch's kernel, which rounds once where these passes would round five times)
            return self.fc2(gelu_tanh_(F.linear(x, self.fc1.weight), self.fc1.bias))
        return self.fc2(self.act(self.fc1(x)))
