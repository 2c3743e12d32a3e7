"""Wrapping the backbone for data parallelism (DDP or FSDP ``fully_shard``), checkpointing and compile,
and moving full (unsharded) state in and out of the wrapped model."""

from __future__ import annotations

import functools
from typing import Any, Literal

import torch
from jaxtyping import Shaped
from torch import Tensor, nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.nn.parallel import DistributedDataParallel
from torch.utils.checkpoint import checkpoint

from .distributed import Distributed

__all__ = ["Strategy", "transformer_blocks", "enable_activation_checkpointing", "wrap_model", "full_state", "load_full_state"]

Strategy = Literal["ddp", "fsdp"]
"""Data parallelism over ranks: replicated weights (DDP) or sharded ones (FSDP ``fully_shard``)."""


def transformer_blocks(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks of a backbone: every member of an ``nn.ModuleList`` (encoder, decoder, DiT blocks)."""
    return [blk for m in model.modules() if isinstance(m, nn.ModuleList) for blk in m]


def enable_activation_checkpointing(model: nn.Module) -> None:
    """Recompute each transformer block's activations in the backward pass (less memory, ~30% more compute).

    Wraps the block's ``forward`` in place, so parameter names and state dicts do not change.
    """
    for blk in transformer_blocks(model):
        blk.forward = functools.partial(checkpoint, blk.forward, use_reentrant=False)  # type: ignore[method-assign]


def wrap_model(model: nn.Module, ema: nn.Module, dist: Distributed, strategy: Strategy = "ddp") -> nn.Module:
    """Return the module the training step calls.

    - one process: ``model`` itself;
    - ``"ddp"``: ``DistributedDataParallel`` (gradients all-reduced, averaged over ranks);
    - ``"fsdp"``: ``fully_shard`` on every transformer block and the root, in place; the EMA
      copy is sharded the same way so the EMA update stays shard-local.
    """
    if not dist.enabled:
        return model
    if strategy == "ddp":
        device_ids = [dist.device.index] if dist.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids)
    if strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for module in (model, ema):
            for blk in transformer_blocks(module):
                fully_shard(blk)
            fully_shard(module)
        return model
    raise ValueError(f"strategy {strategy!r} is not 'ddp' or 'fsdp'")


_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def full_state(
    model: nn.Module, optimizer: torch.optim.Optimizer | None, strategy: Strategy, dist: Distributed
) -> tuple[dict[str, Shaped[Tensor, "..."]], dict[str, Any] | None]:
    """Full CPU state dicts of ``model`` (the unwrapped backbone) and ``optimizer``, on every rank.

    Under FSDP this is a collective (every rank must call it); the result is complete on rank 0.
    """
    if strategy == "fsdp" and dist.enabled:
        model_sd = get_model_state_dict(model, options=_FULL)
        opt_sd = get_optimizer_state_dict(model, optimizer, options=_FULL) if optimizer is not None else None
        return model_sd, opt_sd
    model_sd = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return model_sd, (optimizer.state_dict() if optimizer is not None else None)


def load_full_state(
    model: nn.Module,
    model_sd: dict[str, Shaped[Tensor, "..."]],
    optimizer: torch.optim.Optimizer | None,
    optimizer_sd: dict[str, Any] | None,
    strategy: Strategy,
    dist: Distributed,
) -> None:
    """Load full state dicts (as :func:`full_state` returns them) into a possibly sharded model and optimizer."""
    if strategy == "fsdp" and dist.enabled:
        set_model_state_dict(model, model_sd, options=StateDictOptions(full_state_dict=True))
        if optimizer is not None and optimizer_sd is not None:
            set_optimizer_state_dict(model, optimizer, optimizer_sd, options=StateDictOptions(full_state_dict=True))
        return
    model.load_state_dict(model_sd, strict=True)
    if optimizer is not None and optimizer_sd is not None:
        optimizer.load_state_dict(optimizer_sd)
