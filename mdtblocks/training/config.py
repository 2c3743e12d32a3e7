"""Settings of the training loop (what to run is the recipe's business; how to run it is this)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["TrainConfig", "Precision"]

Precision = Literal["fp32", "bf16"]
"""Training precision: fp32 throughout, or the backbone forward under bf16 autocast."""


@dataclass(frozen=True)
class TrainConfig:
    """How :func:`~mdtblocks.training.train` runs.

    Attributes:
        steps: optimizer steps to train for (a resumed run continues up to this).
        global_batch_size: samples per optimizer step, over all ranks and accumulation steps.
        micro_batch_size: samples per rank per forward/backward; ``None`` uses the whole
            per-rank batch (no gradient accumulation). The update does not depend on it.
        seed: base seed of every random draw (data order, noise, timesteps, masks, labels).
        ema_decay: EMA decay per step (0.9999 in the papers).
        grad_clip: max global gradient norm, ``None`` for no clipping.
        ckpt_every: checkpoint (and sample grid) every this many steps, and at the end.
        log_every: read back and log metrics every this many steps (the only host syncs).
        precision: ``"bf16"`` autocasts the model's forward; weights, optimizer and diffusion
            math stay fp32.
        strategy: ``"ddp"`` or ``"fsdp"`` (``fully_shard``, for XL models) when several ranks run.
        compile: ``torch.compile`` the model.
        compile_blocks: ``torch.compile`` each transformer block instead
            (:func:`~mdtblocks.blocks.compile_blocks`): less to compile for nearly the same
            step time; exclusive with ``compile``.
        activation_checkpointing: recompute block activations in backward.
        num_workers: DataLoader worker processes.
        num_samples: images in each checkpoint's sample grid (0 for none).
        sample_cfg_scale: classifier-free guidance scale of the sample grids (1: none).
        max_bad_steps: stop after this many non-finite (skipped) steps in a row.
        keep_checkpoints: keep only the newest N checkpoints (pruned after each new one is
            complete); ``None`` keeps all.
    """

    steps: int
    global_batch_size: int
    micro_batch_size: int | None = None
    seed: int = 0
    ema_decay: float = 0.9999
    grad_clip: float | None = 1.0
    ckpt_every: int = 10_000
    log_every: int = 100
    precision: Precision = "fp32"
    strategy: Literal["ddp", "fsdp"] = "ddp"
    compile: bool = False
    compile_blocks: bool = False
    activation_checkpointing: bool = False
    num_workers: int = 4
    num_samples: int = 16
    sample_cfg_scale: float = 1.0
    max_bad_steps: int = 10
    keep_checkpoints: int | None = None

    def __post_init__(self) -> None:
        for name in ("steps", "global_batch_size", "ckpt_every", "log_every", "max_bad_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.keep_checkpoints is not None and self.keep_checkpoints < 1:
            raise ValueError(f"keep_checkpoints must be at least 1 (or None: keep all), got {self.keep_checkpoints}")
        if self.micro_batch_size is not None and self.micro_batch_size < 1:
            raise ValueError(f"micro_batch_size must be at least 1, got {self.micro_batch_size}")
        if not 0.0 <= self.ema_decay <= 1.0:
            raise ValueError(f"ema_decay {self.ema_decay} is outside [0, 1]")
        if self.compile and self.compile_blocks:
            raise ValueError("compile (the whole model) and compile_blocks (each block) exclude each other; choose one")
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision {self.precision!r} is not 'fp32' or 'bf16'")
        if self.strategy not in ("ddp", "fsdp"):
            raise ValueError(f"strategy {self.strategy!r} is not 'ddp' or 'fsdp'")

    def split(self, world_size: int) -> tuple[int, int, int]:
        """``(per-rank batch, micro batch, accumulation steps)`` for ``world_size`` ranks.

        Raises a ``ValueError`` that quotes the numbers when the global batch does not split evenly.
        """
        if self.global_batch_size % world_size:
            raise ValueError(
                f"global batch {self.global_batch_size} does not split over {world_size} ranks; "
                f"use a multiple of {world_size}"
            )
        per_rank = self.global_batch_size // world_size
        micro = self.micro_batch_size or per_rank
        if micro > per_rank or per_rank % micro:
            raise ValueError(
                f"micro batch {micro} must divide the per-rank batch {per_rank} "
                f"(global batch {self.global_batch_size} over {world_size} ranks)"
            )
        return per_rank, micro, per_rank // micro
