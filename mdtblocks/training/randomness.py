"""All randomness of a training step, derived from ``(seed, step)`` so that resume needs only the step.

A step draws the randomness of the *whole global batch* (timesteps, noise, label
drops, mask plan) from generators seeded by ``(seed, stream, step)``; each rank then
takes the rows of its own samples. The same sample therefore gets the same
timestep, noise and mask whatever the split over ranks and accumulation steps, which
is what makes 1 process and N processes give the same update for the same global batch.
"""

from __future__ import annotations

import hashlib

import torch
from torch import Tensor

from ..diffusion.objective import StepRandomness
from ..masking import MaskPlan

__all__ = ["derive_seed", "step_generator", "StepRandomness", "draw_step_randomness"]


def derive_seed(seed: int, *keys: int | str) -> int:
    """A 63-bit seed from ``seed`` and any keys (stream name, step, rank), stable across runs and machines."""
    digest = hashlib.sha256(repr((int(seed), *keys)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def step_generator(seed: int, stream: str, step: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A fresh generator for one ``stream`` (e.g. ``"noise"``) of one training ``step``."""
    return torch.Generator(device=device).manual_seed(derive_seed(seed, stream, step))


def draw_step_randomness(
    model: torch.nn.Module,
    *,
    seed: int,
    step: int,
    global_batch: int,
    sample_shape: tuple[int, int, int],
    num_timesteps: int,
    device: torch.device,
    independent_masked_pass: bool = False,
) -> StepRandomness:
    """Draw the randomness of global batch ``step`` (identical on every rank).

    With ``independent_masked_pass`` (the objective's ``masked_draws="independent"``, the
    official protocol) the masked pass also gets its own label drops (drawn after the
    mask) and its own noise (a separate stream); every other draw is unchanged.

    Small draws (timesteps, label flips, mask plan) come from CPU generators, so that the
    per-batch mask ratio is read without a device sync; the noise is drawn on ``device``.
    ``model`` is the backbone (passed in, not found through wrappers): its ``y_embedder``
    and ``mask_sampler`` define the label dropout and masking.
    """
    g_small = step_generator(seed, "t-labels-mask", step)
    t = torch.randint(0, num_timesteps, (global_batch,), generator=g_small)
    # The model's own label-dropout coins, one per sample of the global batch.
    drop_label = model.y_embedder.draw_drops(global_batch, generator=g_small)
    sampler = getattr(model, "mask_sampler", None)
    mask = None
    if sampler is not None:
        plan = sampler(global_batch, model.num_tokens, generator=g_small)
        mask = MaskPlan(
            ids_keep=_to(plan.ids_keep, device), ids_restore=_to(plan.ids_restore, device), mask=_to(plan.mask, device)
        )
    masked_drop = masked_noise = None
    if mask is not None and independent_masked_pass:
        masked_drop = _to(model.y_embedder.draw_drops(global_batch, generator=g_small), device)
        masked_noise = torch.randn(
            (global_batch, *sample_shape), generator=step_generator(seed, "noise-masked", step, device), device=device
        )
    noise = torch.randn(
        (global_batch, *sample_shape), generator=step_generator(seed, "noise", step, device), device=device
    )
    null_class = model.y_embedder.num_classes
    return StepRandomness(
        t=_to(t, device), noise=noise, drop_label=_to(drop_label, device), mask=mask, null_class=null_class,
        masked_noise=masked_noise, masked_drop_label=masked_drop,
    )


def _to(x: Tensor, device: torch.device) -> Tensor:
    """Copy a CPU draw to ``device`` without a host sync (a copy from pageable memory waits for the GPU)."""
    if device.type != "cuda":
        return x.to(device)
    return x.pin_memory().to(device, non_blocking=True)
