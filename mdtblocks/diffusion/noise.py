"""Gaussian noise from an explicit generator, reproducible across devices."""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

__all__ = ["gaussian_noise"]


def gaussian_noise(like: Float[Tensor, "*shape"], generator: torch.Generator | None) -> Float[Tensor, "*shape"]:
    """Standard normal noise shaped like ``like``, drawn from ``generator`` on its own device.

    Drawing on the generator's device and then moving makes a CPU generator give the
    same noise whatever device the sampler runs on. ``generator=None`` falls back to
    torch's global generator (the official code's behaviour).

    Args:
        like: floating-point tensor of any shape ``(*shape)``, e.g. ``(b, c, hh, ww)``,
            whose shape, dtype and device the noise takes (its values are not read).
        generator: the source of randomness.

    Returns:
        ``(*shape)`` unit-variance, zero-mean noise with ``like``'s dtype and device.
    """
    if generator is None:
        return torch.randn_like(like)
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    return torch.randn(like.shape, generator=generator, device=generator.device, dtype=like.dtype).to(like.device)
