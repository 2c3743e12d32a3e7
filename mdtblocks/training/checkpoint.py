"""Training checkpoints: ``OUT/checkpoints/<step, 7 digits>/``, written under a temporary name, renamed when complete.

A checkpoint folder holds:

- ``model.safetensors`` and ``ema.safetensors``: raw and EMA weights;
- ``config.json``: the model config exactly as ``model.save_pretrained`` writes it, so
  ``mdtblocks.load_pretrained(folder, weights_name="ema.safetensors")`` loads it;
- ``optimizer.pt``: the optimizer state (loadable with ``torch.load(..., weights_only=True)``);
- ``state.json``: step, randomness and data position (see :class:`TrainState`).

Only folders named by exactly 7 digits are complete; a kill mid-write leaves a
``.tmp-*`` folder that is ignored and cleaned up by the next save.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Shaped
from safetensors.torch import load_file, save_file
from torch import Tensor

from ..io import read_json, write_json

__all__ = [
    "TrainState",
    "checkpoint_dir",
    "latest_checkpoint",
    "model_config_json",
    "write_checkpoint",
    "read_checkpoint",
    "Checkpoint",
]

STEP_DIGITS = 7
_STEP_DIR = re.compile(rf"^\d{{{STEP_DIGITS}}}$")


@dataclass
class TrainState:
    """What a resume needs besides the tensors.

    Attributes:
        step: optimizer steps taken.
        seed: base seed; every random draw of step ``s`` derives from ``(seed, s)``
            (:mod:`mdtblocks.training.randomness`), so ``seed`` and ``step`` are the
            whole random state of the loop.
        data: data position per rank (the sampler's ``state_dict`` after the last
            consumed batch), indexed by rank.
        torch_rng: ``torch.get_rng_state()`` of rank 0 as a hex string, restored for
            code outside the loop that still uses the global generator.
        world_size: processes that wrote the checkpoint.
    """

    step: int
    seed: int
    data: list[Any] = field(default_factory=list)
    torch_rng: str = ""
    world_size: int = 1


def checkpoint_dir(out: str | os.PathLike, step: int) -> Path:
    """``OUT/checkpoints/<step, 7 digits>``."""
    return Path(out) / "checkpoints" / f"{step:0{STEP_DIGITS}d}"


def latest_checkpoint(out: str | os.PathLike) -> Path | None:
    """Newest complete checkpoint folder under ``OUT/checkpoints``, or None."""
    root = Path(out) / "checkpoints"
    if not root.is_dir():
        return None
    steps = [p for p in root.iterdir() if p.is_dir() and _STEP_DIR.match(p.name) and (p / "state.json").is_file()]
    return max(steps, key=lambda p: int(p.name), default=None)


def model_config_json(model: torch.nn.Module) -> dict[str, Any]:
    """The ``config.json`` content that ``model.save_pretrained`` writes."""
    return {"class": type(model).__name__, **model.config.to_dict()}


def _cpu(state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


@dataclass
class Checkpoint:
    """Full (unsharded) CPU copies of everything a checkpoint holds."""

    model: dict[str, Shaped[Tensor, "..."]]
    ema: dict[str, Shaped[Tensor, "..."]]
    optimizer: dict[str, Any]
    state: TrainState
    model_config: dict[str, Any]


def write_checkpoint(out: str | os.PathLike, ckpt: Checkpoint) -> Path:
    """Write ``ckpt`` to ``OUT/checkpoints/<step>`` through a temporary folder and one rename.

    The temporary folder is fsynced before the rename, so the 7-digit folder is either
    absent or complete. Called on rank 0 only.
    """
    final = checkpoint_dir(out, ckpt.state.step)
    root = final.parent
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    tmp.mkdir()
    save_file(_cpu(ckpt.model), str(tmp / "model.safetensors"), metadata={"format": "pt"})
    save_file(_cpu(ckpt.ema), str(tmp / "ema.safetensors"), metadata={"format": "pt"})
    torch.save(ckpt.optimizer, tmp / "optimizer.pt")
    write_json(tmp / "config.json", ckpt.model_config)
    write_json(tmp / "state.json", asdict(ckpt.state))
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    if final.exists():  # a re-save of the same step (e.g. the final step after a resume)
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(root)
    return final


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_checkpoint(directory: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint folder back (every tensor on CPU)."""
    directory = Path(directory)
    state = TrainState(**read_json(directory / "state.json"))
    return Checkpoint(
        model=load_file(str(directory / "model.safetensors")),
        ema=load_file(str(directory / "ema.safetensors")),
        optimizer=torch.load(directory / "optimizer.pt", map_location="cpu", weights_only=True),
        state=state,
        model_config=read_json(directory / "config.json"),
    )
