"""All randomness of a training step, derived from ``(seed, step)`` so that resume needs only the step.

A step draws the randomness of the *whole global batch* (timesteps, noise, label
drops, mask plan) from generators seeded by ``(seed, stream, step)``; each rank then
takes the rows of its own samples. The same sample therefore gets the same
timestep, noise and mask whatever the split over ranks and accumulation steps, which
is what makes 1 process and N processes give the same update for the same global batch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import torch

from ..criterion import Criterion, LabelDropout, StepRandomness, rule_of_model
from ..objectives.gaussian import GaussianObjective

__all__ = ["derive_seed", "step_generator", "step_streams", "StepRandomness", "draw_step_randomness"]


def derive_seed(seed: int, *keys: int | str) -> int:
    """A 63-bit seed from ``seed`` and any keys (stream name, step, rank), stable across runs and machines."""
    digest = hashlib.sha256(repr((int(seed), *keys)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def step_generator(seed: int, stream: str, step: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A fresh generator for one ``stream`` (e.g. ``"noise"``) of one training ``step``."""
    return torch.Generator(device=device).manual_seed(derive_seed(seed, stream, step))


def step_streams(seed: int, step: int) -> Callable[[str, torch.device], torch.Generator]:
    """The random streams of training ``step``: ``(name, device) -> step_generator(seed, name, step, device)``."""
    return lambda stream, device: step_generator(seed, stream, step, device)


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
    """Draw the randomness of global batch ``step`` as the Gaussian diffusion with the model's own mask and label dropout.

    The draws of :meth:`~mdtblocks.criterion.Criterion.draw_step` for the criterion that
    trained every run before the criterion existed: times uniform in ``[0, num_timesteps)``,
    the token rule of ``model``'s mask fields (with ``independent_masked_pass`` the masked
    pass has its own label drops and noise) and the label dropout of its config. The
    loop calls its criterion's ``draw_step`` directly.
    """
    masked_draws = "independent" if independent_masked_pass else "shared"
    criterion = Criterion(
        GaussianObjective(diffusion_steps=num_timesteps), rule_of_model(model, masked_draws), LabelDropout.of_model(model)
    )
    return criterion.draw_step(
        model, streams=step_streams(seed, step), global_batch=global_batch, sample_shape=sample_shape, device=device
    )
