"""Training-time samplers (uniform, logit-normal) and the sampling-grid time shift, in SiT's convention (t=1 is data)."""

from __future__ import annotations

import math

import torch
from jaxtyping import Float
from torch import Tensor

__all__ = ["TIME_SAMPLERS", "draw_training_times", "shift_times", "check_times"]

TIME_SAMPLERS = ("uniform", "logit_normal")
"""Names of the training-time distributions."""


def draw_training_times(
    n: int,
    generator: torch.Generator,
    *,
    t0: float,
    t1: float,
    sampler: str = "uniform",
    mean: float = 0.0,
    scale: float = 1.0,
) -> Float[Tensor, "n"]:
    """``n`` training times in ``[t0, t1]`` on ``generator``'s device.

    ``"uniform"`` is SiT's ``U(t0, t1)`` (one ``torch.rand`` draw per sample).
    ``"logit_normal"`` draws ``u = sigmoid(mean + scale * N(0, 1))`` (Esser et al. 2024,
    SD3 Sec. 3.1; LightningDiT's default with mean 0, scale 1) and maps it into
    ``[t0, t1]``. SD3 writes the same density on its noise level ``1 - t``: a mean ``m``
    there is ``-m`` here.

    Raises:
        ValueError: for an unknown sampler or a non-positive scale.
    """
    if sampler not in TIME_SAMPLERS:
        raise ValueError(f"unknown time sampler {sampler!r}; expected one of {TIME_SAMPLERS}")
    device = generator.device
    if sampler == "uniform":
        u = torch.rand((n,), generator=generator, device=device)
    else:
        if not scale > 0:
            raise ValueError(f"logit-normal scale must be positive, got {scale!r}")
        u = torch.sigmoid(mean + scale * torch.randn((n,), generator=generator, device=device))
    return u * (t1 - t0) + t0


def shift_times(t: Float[Tensor, "n"], shift: float | None) -> Float[Tensor, "n"]:
    """Warp a time grid towards the noise end by ``shift`` (SD3's timestep shift; LightningDiT's sampling shift).

    On the noise level ``sigma = 1 - t`` the shift is ``sigma' = s sigma / (1 + (s - 1) sigma)``
    (Esser et al. 2024, Eq. 23): ``s > 1`` spends more steps near noise, ``s = 1`` (or
    ``None``) is the identity. The ends 0 and 1 stay fixed.

    Raises:
        ValueError: for a non-positive shift.
    """
    if shift is None or shift == 1:
        return t
    if not (isinstance(shift, (int, float)) and math.isfinite(shift) and shift > 0):
        raise ValueError(f"time shift must be a positive number or None, got {shift!r}")
    sigma = 1 - t
    return 1 - shift * sigma / (1 + (shift - 1) * sigma)


def check_times(t: Tensor, what: str = "t") -> None:
    """Refuse times outside ``[0, 1]`` (or non-finite) with a message naming the offending range."""
    if t.numel() and not (torch.isfinite(t).all() and t.min() >= 0 and t.max() <= 1):
        raise ValueError(f"{what} must lie in [0, 1] (0 is noise, 1 is data), got values in [{t.min().item()}, {t.max().item()}]")
