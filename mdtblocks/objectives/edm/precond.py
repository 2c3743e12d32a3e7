"""EDM preconditioning (Karras et al. 2022, Table 1 and Section 5): a backbone ``F`` made into a denoiser ``D(x; sigma)``."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float, Shaped
from torch import Tensor, nn

__all__ = ["PreconditionCoefficients", "EDMPreconditioning", "EDMDenoiser"]

Image = Float[Tensor, "b c hh ww"]


@dataclass(frozen=True)
class PreconditionCoefficients:
    """The four scalings of ``D(x; sigma) = c_skip x + c_out F(c_in x; c_noise)``, one per sample.

    Attributes:
        c_skip: ``(b, 1, 1, 1)`` weight of the skip connection (1 at ``sigma = 0``).
        c_out: ``(b, 1, 1, 1)`` scale of the network output (0 at ``sigma = 0``).
        c_in: ``(b, 1, 1, 1)`` input scale giving the network unit-variance inputs.
        c_noise: ``(b,)`` the noise level as the network's time input.
    """

    c_skip: Float[Tensor, "b 1 1 1"]
    c_out: Float[Tensor, "b 1 1 1"]
    c_in: Float[Tensor, "b 1 1 1"]
    c_noise: Float[Tensor, "b"]


@dataclass(frozen=True)
class EDMPreconditioning:
    """EDM's preconditioning for data of standard deviation ``sigma_data``.

    With ``s = sigma`` and ``d = sigma_data`` (Karras et al. 2022, Table 1, "Ours"):
    ``c_skip = d^2 / (s^2 + d^2)``, ``c_out = s d / sqrt(s^2 + d^2)``,
    ``c_in = 1 / sqrt(s^2 + d^2)``, ``c_noise = ln(s) / 4``. The network ``F`` then
    sees unit-variance inputs and is trained on a unit-variance target at every noise level.

    Attributes:
        sigma_data: standard deviation of the training data (0.5 in EDM and MaskDiT).
    """

    sigma_data: float = 0.5

    def __post_init__(self) -> None:
        if isinstance(self.sigma_data, bool) or not isinstance(self.sigma_data, (int, float)) or not (
            math.isfinite(self.sigma_data) and self.sigma_data > 0
        ):
            raise ValueError(f"sigma_data must be a positive finite number, got {self.sigma_data!r}")

    def coefficients(self, sigma: Shaped[Tensor, "b"]) -> PreconditionCoefficients:
        """The scalings at noise levels ``sigma`` (positive; ``c_noise`` is ``-inf`` at 0), in ``sigma``'s float dtype."""
        s = sigma.reshape(-1, 1, 1, 1)
        d2 = self.sigma_data**2
        norm = (s**2 + d2).sqrt()
        return PreconditionCoefficients(
            c_skip=d2 / (s**2 + d2),
            c_out=s * self.sigma_data / norm,
            c_in=1 / norm,
            c_noise=s.log().flatten() / 4,
        )

    def loss_weight(self, sigma: Shaped[Tensor, "b"]) -> Float[Tensor, "b"]:
        """``lambda(sigma) = (s^2 + d^2) / (s d)^2 = 1 / c_out^2``: equalises the loss across noise levels (EDM eq. 8)."""
        return (sigma**2 + self.sigma_data**2) / (sigma * self.sigma_data) ** 2

    def denoise(
        self,
        net: Callable[..., Tensor],
        x: Image,
        sigma: Shaped[Tensor, "b"],
        **model_kwargs: Any,
    ) -> Image:
        """``D(x; sigma)``: call ``net(c_in x, c_noise, **model_kwargs)`` and combine it with the skip.

        ``net`` is any backbone with DiT's ``forward(x, t, y, ...)``; its time input is
        ``c_noise``. A backbone that learns the variance (twice the input channels, as
        DiT's ``learn_sigma``) has its variance channels dropped: EDM has no use for them.
        The scalings are computed in ``x``'s dtype, as the network input.

        Raises:
            ValueError: ``sigma`` is not one level per sample (or one for all), or the
                network output has neither ``c`` nor ``2c`` channels.
        """
        b, c = x.shape[:2]
        sigma = torch.as_tensor(sigma, device=x.device).to(x.dtype).reshape(-1)
        if sigma.shape[0] not in (1, b):
            raise ValueError(f"sigma has {sigma.shape[0]} values for a batch of {b}; expected {b} (or 1)")
        if sigma.shape[0] == 1 and b > 1:
            sigma = sigma.expand(b)
        k = self.coefficients(sigma)
        out = net(k.c_in * x, k.c_noise, **model_kwargs)
        if out.shape[1] == 2 * c:
            out = out[:, :c]
        elif out.shape[1] != c:
            raise ValueError(f"the network returned {out.shape[1]} channels for a {c}-channel input; expected {c} or {2 * c}")
        return k.c_skip * x + k.c_out * out.to(x.dtype)


class EDMDenoiser(nn.Module):
    """A backbone wrapped as EDM's denoiser ``D(x; sigma, y)``: what the samplers call.

    ``backbone`` may be a guided model (a
    :class:`~mdtblocks.sampling.ClassifierFreeGuidance` with a constant scale): guidance
    mixes the network outputs ``F``, and since the preconditioning is affine in ``F``
    with the same coefficients for both halves, that equals mixing the denoised ``D``.

    Args:
        backbone: the network, ``backbone(x, t, y, ...)``.
        preconditioning: the scalings (``sigma_data``).
    """

    def __init__(self, backbone: Callable[..., Tensor], preconditioning: EDMPreconditioning | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.preconditioning = preconditioning or EDMPreconditioning()

    def forward(self, x: Image, sigma: Shaped[Tensor, "b"], **model_kwargs: Any) -> Image:
        """``D(x; sigma)`` (see :meth:`EDMPreconditioning.denoise`)."""
        return self.preconditioning.denoise(self.backbone, x, sigma, **model_kwargs)
