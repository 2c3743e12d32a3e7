"""The Dispersive loss (Wang and He 2025): spread one block's representations within the batch, no target needed."""

from __future__ import annotations

import math

import torch
from jaxtyping import Float
from torch import Tensor, nn

__all__ = ["DispersiveLoss"]


class DispersiveLoss(nn.Module):
    """InfoNCE-style dispersion with squared L2 distances ("Diffuse and Disperse", the L2 variant).

    With ``z_i`` the tapped tokens of sample ``i`` flattened to a vector of size ``D``,
    ``d_ij = ||z_i - z_j||^2 / D`` and temperature ``tau``, the batch loss is::

        coeff * log( mean_{i, j} exp(-d_ij / tau) )

    over all ``b x b`` pairs, the diagonal (``d_ii = 0``) included, as the authors'
    public code computes it. It is lowest when the samples' representations are far
    apart; it has no positive pairs, no target and no weights. It is a quantity of the
    batch, not a sum over samples: :meth:`forward` returns it in every entry of a
    ``(b,)`` vector, so that averaging the per-sample losses over the batch gives it
    exactly (with data parallelism, each rank disperses its own batch).

    Args:
        coeff: weight of the loss (0.25 in the authors' public code).
        temperature: ``tau`` (1 with the distance averaged over features, as their code).
    """

    def __init__(self, coeff: float = 0.25, temperature: float = 1.0) -> None:
        super().__init__()
        for name, value in (("coeff", coeff), ("temperature", temperature)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if coeff < 0:
            raise ValueError(f"coeff must be non-negative, got {coeff!r}")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature!r}")
        self.coeff, self.temperature = float(coeff), float(temperature)

    def forward(self, tokens: Float[Tensor, "b ..."]) -> Float[Tensor, "b"]:
        """The batch's dispersive loss (float32), repeated for each of the ``b`` samples.

        Args:
            tokens: the tapped tokens of one pass (any trailing shape; flattened per sample).
                A batch of one has nothing to disperse from: its loss is 0.
        """
        if tokens.ndim < 2:
            raise ValueError(f"tokens must be (b, ...) with at least one feature, got shape {tuple(tokens.shape)}")
        z = tokens.float().reshape(tokens.shape[0], -1)  # (b, D)
        b = z.shape[0]
        sq = z.square().sum(-1)  # (b,)
        # ||z_i - z_j||^2 through the Gram matrix: no (b, b, D) difference tensor; exact zeros on the diagonal.
        dist = (sq[:, None] + sq[None, :] - 2.0 * (z @ z.T)).clamp_min(0.0) / z.shape[1]  # (b, b)
        dist = dist * (1.0 - torch.eye(b, device=z.device, dtype=z.dtype))
        loss = torch.logsumexp(-dist.reshape(-1) / self.temperature, dim=0) - math.log(b * b)
        return (self.coeff * loss).repeat(b)  # a tensor of its own (not a broadcast view): safe for in-place weighting

    def extra_repr(self) -> str:
        """The options, for ``repr``."""
        return f"coeff={self.coeff}, temperature={self.temperature}"
