"""Saving and resuming a run: gather the full state over ranks, write it on rank 0, read the newest good one back."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .batches import BatchStream
from .checkpoint import (
    Checkpoint,
    CheckpointError,
    TrainState,
    complete_checkpoints,
    prune_checkpoints,
    read_checkpoint,
    write_checkpoint,
)
from .config import TrainConfig
from .distributed import Distributed
from .guard import NonFiniteGuard
from .parallel import full_state, load_full_state

__all__ = ["save", "resume", "gather_objects", "read_newest_checkpoint", "ResumeRefused"]

log = logging.getLogger("mdtblocks.training")


class ResumeRefused(ValueError):
    """The run folder's newest checkpoint cannot be resumed by this command (another seed, rank count, model or data)."""



def save(
    out: Path,
    step: int,
    model: nn.Module,
    model_config: dict[str, Any],
    ema: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: BatchStream,
    cfg: TrainConfig,
    dist: Distributed,
    bad_steps_in_a_row: int = 0,
) -> Path:
    """Gather full state (a collective under FSDP) and write ``OUT/checkpoints/<step>`` on rank 0."""
    model_sd, opt_sd = full_state(model, optimizer, cfg.strategy, dist)
    ema_sd, _ = full_state(ema, None, cfg.strategy, dist)
    data = gather_objects(batches.state_dict(), dist)
    if dist.is_main:
        state = TrainState(
            step=step, seed=cfg.seed, data=data, torch_rng=torch.get_rng_state().numpy().tobytes().hex(), world_size=dist.world_size,
            bad_steps_in_a_row=bad_steps_in_a_row,
        )
        path = write_checkpoint(out, Checkpoint(model_sd, ema_sd, opt_sd or {}, state, model_config))
        log.info("saved checkpoint %s", path)
        if cfg.keep_checkpoints is not None:
            for old in prune_checkpoints(out, cfg.keep_checkpoints):
                log.info("removed old checkpoint %s (--keep-checkpoints %d)", old, cfg.keep_checkpoints)
    dist.barrier()
    return out / "checkpoints" / f"{step:07d}"


def gather_objects(obj: Any, dist: Distributed) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank."""
    if not dist.enabled:
        return [obj]
    gathered: list[Any] = [None] * dist.world_size
    torch.distributed.all_gather_object(gathered, obj)
    return gathered


def resume(
    out: Path,
    model: nn.Module,
    ema: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: BatchStream,
    cfg: TrainConfig,
    dist: Distributed,
    guard: NonFiniteGuard | None = None,
) -> int:
    """Load the newest complete checkpoint in ``out`` if any; returns the step to start from.

    Restores model, EMA, optimizer, data position and the global torch RNG; all the
    loop's own randomness derives from ``(seed, step)``, so nothing else is needed.
    ``guard`` gets back the run of non-finite steps the checkpoint ended on.
    """
    found = read_newest_checkpoint(out, dist)
    if found is None:
        return 0
    path, ckpt = found
    if ckpt.state.seed != cfg.seed:
        raise ResumeRefused(f"{path} was trained with seed {ckpt.state.seed}, this run has --seed {cfg.seed}")
    if ckpt.state.world_size != dist.world_size:
        raise ResumeRefused(
            f"{path} was written by {ckpt.state.world_size} ranks; resuming on {dist.world_size} would change the "
            "data order (resume with the same number of processes)"
        )
    mine, theirs = set(model.state_dict()), set(ckpt.model)
    if mine != theirs:  # another model, or another head (e.g. --align's projector): refused, not half-loaded
        missing, unexpected = sorted(mine - theirs), sorted(theirs - mine)
        raise ResumeRefused(
            f"{path} holds the weights of another model than this command builds (missing: {missing[:3]}"
            f"{' ...' if len(missing) > 3 else ''}; not in this model: {unexpected[:3]}{' ...' if len(unexpected) > 3 else ''}): "
            "it was trained with other model or --align flags; give the same flags, or a new --out"
        )
    load_full_state(model, ckpt.model, optimizer, ckpt.optimizer, cfg.strategy, dist)
    load_full_state(ema, ckpt.ema, None, None, cfg.strategy, dist)
    data_state = ckpt.state.data[dist.rank]
    if data_state.get("batch_size", batches.batch_size) != batches.batch_size:
        raise ResumeRefused(
            f"{path} was written with {data_state['batch_size']} samples per rank per step, this run has "
            f"{batches.batch_size}: resuming would change the data order (keep --global-batch-size and the number "
            "of processes), or use a new --out"
        )
    try:
        batches.load_state_dict(data_state)
    except ValueError as err:  # another dataset length (e.g. --flip changed): refused, not a traceback
        raise ResumeRefused(
            f"{path} was trained on other data than this command loads ({err}); give the same data flags "
            "(--data, --latents, --flip), or a new --out"
        ) from None
    if ckpt.state.torch_rng:
        torch.set_rng_state(torch.frombuffer(bytearray.fromhex(ckpt.state.torch_rng), dtype=torch.uint8))
    if guard is not None:
        guard.restore_in_a_row(ckpt.state.bad_steps_in_a_row)
    if dist.is_main:
        log.info("resumed from %s (step %d)", path, ckpt.state.step)
    return ckpt.state.step


def read_newest_checkpoint(out: Path, dist: Distributed) -> tuple[Path, Checkpoint] | None:
    """The newest checkpoint under ``out`` that reads back; corrupt ones are reported by path and passed over."""
    for path in complete_checkpoints(out):
        try:
            return path, read_checkpoint(path)
        except CheckpointError as err:
            if dist.is_main:
                log.warning("%s; resuming from the previous checkpoint instead", err)
    return None

