"""A linear layer whose bias a compiler can fuse into what consumes the output."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

__all__ = ["linear"]


def linear(layer: nn.Linear, x: Float[Tensor, "*batch d_in"]) -> Float[Tensor, "*batch d_out"]:
    """``layer(x)``; while ``torch.compile`` traces it on a CPU, the bias is a separate addition.

    A CPU ``addmm`` first copies the bias into every row of its output and then accumulates
    the product onto it: one extra write and read of an activation-sized tensor. Written as
    ``x W^T + b``, the compiler folds the addition into the elementwise kernel that reads the
    product next (GELU, the gated residual), as PyTorch's compiler already does on GPUs.
    The same function, up to the order of one rounding step.
    """
    if layer.bias is not None and x.device.type == "cpu" and torch.compiler.is_compiling():
        return F.linear(x, layer.weight) + layer.bias
    return layer(x)
