"""Exponential moving average of model weights (EMA 0.9999 in DiT, MDT and MDTv2)."""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["make_ema", "update_ema"]


def make_ema(model: nn.Module) -> nn.Module:
    """A frozen fp32 copy of ``model`` in eval mode, on the same device."""
    ema = copy.deepcopy(model).float().eval()
    ema.requires_grad_(False)
    return ema


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """``ema <- decay * ema + (1 - decay) * model`` for trained parameters; copy everything else.

    Runs as a few fused ``foreach`` kernels and never reads a value back to the host.
    Frozen parameters (DiT's fixed position table) and buffers are copied, so the EMA
    model is always a complete, loadable model. Under FSDP both are sharded alike and
    each rank updates its own shards.
    """
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"EMA decay {decay} is outside [0, 1]")
    src = dict(model.named_parameters())
    trained_ema, trained_src = [], []
    for name, p_ema in ema.named_parameters():
        if name not in src:
            raise KeyError(f"EMA parameter {name!r} is missing from the model")
        p = _local(src[name].detach())
        if src[name].requires_grad:
            trained_ema.append(_local(p_ema))
            trained_src.append(p.to(p_ema.dtype))
        else:
            _local(p_ema).copy_(p)
    if trained_ema:
        torch._foreach_lerp_(trained_ema, trained_src, 1.0 - decay)
    for (name, b_ema), (_, b) in zip(ema.named_buffers(), model.named_buffers()):
        b_ema.copy_(b)


def _local(t: torch.Tensor) -> torch.Tensor:
    """This rank's shard of an FSDP (DTensor) parameter; the tensor itself otherwise.

    The EMA copy is sharded exactly like the model, so shard-local updates are the full update.
    """
    return t.to_local() if hasattr(t, "to_local") else t
