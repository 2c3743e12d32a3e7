"""Process-group setup under torchrun: one process per device, NCCL on GPUs, Gloo on CPUs."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as torch_dist
from jaxtyping import Float
from torch import Tensor

__all__ = ["Distributed", "PROCESS_GROUP_TIMEOUT", "setup_distributed", "resolve_device"]

DEVICES = ("auto", "cpu", "cuda")

PROCESS_GROUP_TIMEOUT = timedelta(minutes=10)
"""How long a collective waits for a rank that neither answers nor exits (a hung data loader,
a stuck node) before it fails on every rank: NCCL's default (Gloo's would be 30 minutes).
A rank that raises or dies closes its connections, and the others fail at once."""


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``"cuda"`` fails loudly when there is no GPU."""
    if name not in DEVICES:
        raise ValueError(f"device {name!r} is not one of {DEVICES}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for but torch sees no CUDA device (use --device cpu or auto)")
    return torch.device(name)


@dataclass(frozen=True)
class Distributed:
    """Where this process sits in the job.

    Attributes:
        rank: global rank in ``[0, world_size)``.
        world_size: number of processes (torchrun's ``WORLD_SIZE``; 1 without torchrun).
        local_rank: rank on this node, which picks the GPU.
        device: the device this process trains on.
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0 writes files, logs and shows the progress bar."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """Whether a process group exists (more than one process)."""
        return self.world_size > 1

    def barrier(self) -> None:
        """Wait for every rank (no-op for one process)."""
        if self.enabled:
            torch_dist.barrier()

    def mean(self, value: Float[Tensor, "*shape"]) -> Float[Tensor, "*shape"]:
        """Average a tensor over ranks (returns it unchanged for one process).

        Args:
            value: floating-point tensor of any shape ``(*shape)``, the same shape on
                every rank, on this process's device.

        Returns:
            ``(*shape)`` elementwise mean over ranks, in ``value``'s units.
        """
        if not self.enabled:
            return value
        value = value.clone()
        torch_dist.all_reduce(value, op=torch_dist.ReduceOp.SUM)
        return value / self.world_size

    def close(self) -> None:
        """Tear the process group down (safe to call twice)."""
        if self.enabled and torch_dist.is_initialized():
            torch_dist.destroy_process_group()


def setup_distributed(device: str = "auto", timeout: timedelta = PROCESS_GROUP_TIMEOUT) -> Distributed:
    """Join the torchrun job if there is one, else describe a single process.

    torchrun sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; multi-node jobs come from
    torchrun's own flags (``--nnodes``, ``--rdzv-endpoint``), nothing here changes.
    The backend follows the device: NCCL on CUDA, Gloo on CPU.

    Args:
        device: ``"auto"``, ``"cpu"`` or ``"cuda"`` (see :func:`resolve_device`).
        timeout: how long a collective waits for an unresponsive rank before failing.
    """
    dev = resolve_device(device)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if dev.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA devices are visible")
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    if world_size > 1 and not torch_dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        kwargs = {"device_id": dev} if dev.type == "cuda" else {}
        torch_dist.init_process_group(backend=backend, timeout=timeout, **kwargs)
    return Distributed(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)
