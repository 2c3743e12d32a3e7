"""SiT (Ma et al. 2024): DiT's network trained as a flow; its forward returns the prediction without the variance half."""

from __future__ import annotations

import torch
from jaxtyping import Float, Int, Shaped
from torch import Tensor

from .dit import DiT

__all__ = ["SiT"]


class SiT(DiT):
    """Scalable Interpolant Transformer: a :class:`~mdtblocks.DiT` whose output keeps only the prediction.

    SiT's released models are DiT networks built with ``learn_sigma=True`` (so their
    checkpoints have DiT's shapes) whose ``forward`` drops the second half of the output
    channels: flow matching has no variance to learn. Times are flow times in ``[0, 1]``
    (0 noise, 1 data), embedded by the same sinusoidal embedder. Build with
    :meth:`from_preset` (``"SiT-XL/2"``, ...) and load SiT's ``.pt`` files with
    ``load_official(path, family="sit")``.
    """

    def check_inputs(self, x: object, t: object, y: object) -> None:
        """Validate ``(x, t, y)`` as DiT does, except that any finite flow time is accepted.

        dopri5's first-step probe may evaluate the network a little outside ``[0, 1]``
        (SiT's reverse ODE does), so the diffusion models' "timesteps are non-negative"
        check does not apply.
        """
        if isinstance(t, Tensor) and t.is_floating_point():
            if self.check_values and t.numel() and not bool(torch.isfinite(t).all()):
                raise ValueError(f"flow times t must be finite, got {t.tolist()}")
            t = torch.zeros_like(t)
        super().check_inputs(x, t, y)

    def forward(
        self,
        x: Float[Tensor, "b c hh ww"],
        t: Shaped[Tensor, "b"],
        y: Int[Tensor, "b"],
        ids_keep: Int[Tensor, "b k"] | None = None,
    ) -> Float[Tensor, "b c hh ww"]:
        """The velocity (or score, noise) prediction for ``x`` at flow times ``t`` with labels ``y``."""
        out = super().forward(x, t, y, ids_keep)
        return out[:, : self.config.in_channels] if self.config.learn_sigma else out
