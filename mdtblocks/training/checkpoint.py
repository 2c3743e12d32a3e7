"""Training checkpoints: ``OUT/checkpoints/<step, 7 digits>/``, written under a temporary name, renamed when complete.

A checkpoint folder holds:

- ``model.safetensors`` and ``ema.safetensors``: raw and EMA weights;
- ``config.json``: the model config exactly as ``model.save_pretrained`` writes it, so
  ``mdtblocks.load_pretrained(folder, weights_name="ema.safetensors")`` loads it;
- ``optimizer.pt``: the optimizer state (loadable with ``torch.load(..., weights_only=True)``);
- ``state.json``: step, randomness and data position (see :class:`TrainState`).

Only folders named by exactly 7 digits are complete; a kill mid-write leaves a
``.tmp-*`` folder that is ignored and cleaned up by the next save. A write that fails
(a full disk) removes its temporary folder and raises :class:`CheckpointWriteError`
naming the folder; the previous checkpoint is never touched. A complete-looking folder
that does not read back (a truncated file, a bad safetensors header, a missing file)
raises :class:`CheckpointError` naming the file, and the resume falls back to the previous one.
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

from ..io import default_file_mode, read_json, write_json

__all__ = [
    "TrainState",
    "checkpoint_dir",
    "latest_checkpoint",
    "model_config_json",
    "write_checkpoint",
    "read_checkpoint",
    "Checkpoint",
    "CheckpointError",
    "CheckpointWriteError",
    "complete_checkpoints",
    "prune_checkpoints",
]

CHECKPOINT_FILES = ("model.safetensors", "ema.safetensors", "optimizer.pt", "config.json", "state.json")


class CheckpointError(ValueError):
    """A checkpoint folder that looks complete but does not read back (the message names the file)."""


class CheckpointWriteError(OSError):
    """Writing a checkpoint failed (e.g. a full disk); the message names the folder, earlier checkpoints are intact."""

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
        bad_steps_in_a_row: non-finite (skipped) steps ending at ``step``, so that
            ``--max-bad-steps`` counts a run of bad steps across a resume.
    """

    step: int
    seed: int
    data: list[Any] = field(default_factory=list)
    torch_rng: str = ""
    world_size: int = 1
    bad_steps_in_a_row: int = 0


def checkpoint_dir(out: str | os.PathLike, step: int) -> Path:
    """``OUT/checkpoints/<step, 7 digits>``."""
    return Path(out) / "checkpoints" / f"{step:0{STEP_DIGITS}d}"


def complete_checkpoints(out: str | os.PathLike) -> list[Path]:
    """Complete-looking checkpoint folders under ``OUT/checkpoints`` (7-digit name, ``state.json``), newest first."""
    root = Path(out) / "checkpoints"
    if not root.is_dir():
        return []
    steps = [p for p in root.iterdir() if p.is_dir() and _STEP_DIR.match(p.name) and (p / "state.json").is_file()]
    return sorted(steps, key=lambda p: int(p.name), reverse=True)


def latest_checkpoint(out: str | os.PathLike) -> Path | None:
    """Newest complete checkpoint folder under ``OUT/checkpoints``, or None."""
    found = complete_checkpoints(out)
    return found[0] if found else None


def prune_checkpoints(out: str | os.PathLike, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` complete checkpoints; returns the deleted folders.

    Called only after a new checkpoint is complete, so at least ``keep`` good ones remain.
    """
    if keep < 1:
        raise ValueError(f"keep must be at least 1, got {keep}")
    old = complete_checkpoints(out)[keep:]
    for path in old:
        shutil.rmtree(path, ignore_errors=True)
    return old


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
    try:
        tmp.mkdir()
        save_file(_cpu(ckpt.model), str(tmp / "model.safetensors"), metadata={"format": "pt"})
        save_file(_cpu(ckpt.ema), str(tmp / "ema.safetensors"), metadata={"format": "pt"})
        torch.save(ckpt.optimizer, tmp / "optimizer.pt")
        write_json(tmp / "config.json", ckpt.model_config)
        write_json(tmp / "state.json", asdict(ckpt.state))
        for f in tmp.iterdir():
            os.chmod(f, default_file_mode())  # safetensors writes 0600 through its own temporary file
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    except (OSError, RuntimeError) as err:  # safetensors and torch.save report a full disk as RuntimeError too
        shutil.rmtree(tmp, ignore_errors=True)
        previous = latest_checkpoint(out)
        raise CheckpointWriteError(
            f"could not write checkpoint {final} ({err}); is {root} full or read-only? "
            f"The previous checkpoint {previous if previous else '(none)'} is intact"
        ) from err
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
    """Read a checkpoint folder back (every tensor on CPU).

    Raises:
        CheckpointError: a file is missing, truncated or corrupt; the message names it.
    """
    directory = Path(directory)
    missing = [name for name in CHECKPOINT_FILES if not (directory / name).is_file()]
    if missing:
        raise CheckpointError(f"checkpoint {directory} is missing {', '.join(missing)}")

    def read(name: str, load: Any) -> Any:
        try:
            return load(directory / name)
        except Exception as err:  # safetensors, pickle and JSON each raise their own kinds
            raise CheckpointError(f"checkpoint file {directory / name} is unreadable ({type(err).__name__}: {err})") from err

    raw_state = read("state.json", read_json)
    try:
        state = TrainState(**raw_state)
    except TypeError as err:
        raise CheckpointError(f"checkpoint file {directory / 'state.json'} is not a training state ({err})") from err
    return Checkpoint(
        model=read("model.safetensors", lambda p: load_file(str(p))),
        ema=read("ema.safetensors", lambda p: load_file(str(p))),
        optimizer=read("optimizer.pt", lambda p: torch.load(p, map_location="cpu", weights_only=True)),
        state=state,
        model_config=read("config.json", read_json),
    )
