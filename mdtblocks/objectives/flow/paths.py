"""Interpolant paths ``x_t = alpha_t x1 + sigma_t x0`` between noise ``x0`` (t=0) and data ``x1`` (t=1).

Time convention (SiT's, kept so that SiT checkpoints load and sample exactly): ``t = 0``
is pure noise, ``t = 1`` is clean data, and the backbone receives ``t`` in ``[0, 1]``
as a float. Other conventions map onto it as follows:

- REPA (and several rectified-flow codebases) write ``x_s = (1 - s) x1 + s x0``, i.e.
  ``s = 0`` is data: ``t = 1 - s``, and their velocity is the negative of ours.
- diffusers' flow-matching schedulers (``FlowMatchEulerDiscreteScheduler``) use
  ``sigma = 1 - t`` (sigma 1 is noise); their timesteps are ``1000 sigma``.

Each path gives ``alpha_t``, ``sigma_t`` and their time derivatives, and the
probability-flow ODE written in score form, ``v = -f(x, t) + g(t) score``, from which
the conversions between velocity, score and noise predictions follow (Ma et al. 2024,
SiT, Sec. 2). The arithmetic follows SiT's ``transport/path.py`` operation for
operation so that its numbers are reproduced to the last bit where possible.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from jaxtyping import Float, Shaped
from torch import Tensor

__all__ = ["Path", "LinearPath", "GVPPath", "VPPath", "PATHS", "make_path", "expand_like", "DIFFUSION_FORMS"]

Coef = Float[Tensor, "b *one"] | float | int
"""A path coefficient: a tensor broadcastable against ``x`` or, for constant derivatives, a number."""

DIFFUSION_FORMS = ("constant", "SBDM", "sigma", "linear", "decreasing", "increasing-decreasing")
"""Shapes of the SDE diffusion coefficient ``w(t)`` (SiT's choices; SiT's code spells the last one
``"inccreasing-decreasing"``, which is accepted too)."""


def expand_like(t: Shaped[Tensor, "b ..."], x: Float[Tensor, "b ..."]) -> Float[Tensor, "b ..."]:
    """``t`` reshaped to ``(b, 1, 1, ...)`` so that it broadcasts against ``x``."""
    return t.view(t.size(0), *([1] * (x.dim() - 1)))


class Path:
    """The linear path (SiT's ``ICPlan``): ``alpha_t = t``, ``sigma_t = 1 - t`` (rectified flow).

    Subclasses override the coefficients; the conversions are shared.
    """

    name: ClassVar[str] = "Linear"

    def alpha(self, t: Tensor) -> tuple[Coef, Coef]:
        """``(alpha_t, d alpha_t / dt)``, the data coefficient and its derivative."""
        return t, 1

    def sigma(self, t: Tensor) -> tuple[Coef, Coef]:
        """``(sigma_t, d sigma_t / dt)``, the noise coefficient and its derivative."""
        return 1 - t, -1

    def d_alpha_alpha_ratio(self, t: Tensor) -> Coef:
        """``alpha_t' / alpha_t`` (written per path where a closed form is more stable)."""
        return 1 / t

    def drift(self, x: Float[Tensor, "b ..."], t: Shaped[Tensor, "b ..."]) -> tuple[Float[Tensor, "b ..."], Coef]:
        """``(f, g)`` such that the probability-flow velocity is ``-f + g * score``.

        ``f = -(alpha'/alpha) x`` and ``g = (alpha'/alpha) sigma^2 - sigma sigma'``; ``g`` is
        also the "SBDM" diffusion coefficient of the sampling SDE.
        """
        t = expand_like(t, x)
        ratio = self.d_alpha_alpha_ratio(t)
        sigma_t, d_sigma_t = self.sigma(t)
        drift = ratio * x
        diffusion = ratio * (sigma_t**2) - sigma_t * d_sigma_t
        return -drift, diffusion

    def diffusion(
        self, x: Float[Tensor, "b ..."], t: Shaped[Tensor, "b ..."], form: str = "constant", norm: float = 1.0
    ) -> Coef:
        """The SDE's diffusion coefficient ``w(t)`` of shape ``form`` scaled by ``norm`` (see :data:`DIFFUSION_FORMS`).

        Raises:
            ValueError: for an unknown ``form``.
        """
        t = expand_like(t, x)
        if form == "constant":
            return norm
        if form == "SBDM":
            return norm * self.drift(x, t)[1]
        if form == "sigma":
            return norm * self.sigma(t)[0]
        if form == "linear":
            return norm * (1 - t)
        if form == "decreasing":
            return 0.25 * (norm * torch.cos(math.pi * t) + 1) ** 2
        if form in ("increasing-decreasing", "inccreasing-decreasing"):
            return norm * torch.sin(math.pi * t) ** 2
        raise ValueError(f"unknown diffusion form {form!r}; expected one of {DIFFUSION_FORMS}")

    # --- conversions between predictions (SiT path.py, same operation order) ---------------
    def score_from_velocity(
        self, velocity: Float[Tensor, "b ..."], x: Float[Tensor, "b ..."], t: Shaped[Tensor, "b ..."]
    ) -> Float[Tensor, "b ..."]:
        """The score ``grad log p_t(x)`` implied by a velocity prediction."""
        t = expand_like(t, x)
        alpha_t, d_alpha_t = self.alpha(t)
        sigma_t, d_sigma_t = self.sigma(t)
        reverse_ratio = alpha_t / d_alpha_t
        var = sigma_t**2 - reverse_ratio * d_sigma_t * sigma_t
        return (reverse_ratio * velocity - x) / var

    def noise_from_velocity(
        self, velocity: Float[Tensor, "b ..."], x: Float[Tensor, "b ..."], t: Shaped[Tensor, "b ..."]
    ) -> Float[Tensor, "b ..."]:
        """The noise ``x0`` implied by a velocity prediction."""
        t = expand_like(t, x)
        alpha_t, d_alpha_t = self.alpha(t)
        sigma_t, d_sigma_t = self.sigma(t)
        reverse_ratio = alpha_t / d_alpha_t
        var = reverse_ratio * d_sigma_t - sigma_t
        return (reverse_ratio * velocity - x) / var

    def velocity_from_score(
        self, score: Float[Tensor, "b ..."], x: Float[Tensor, "b ..."], t: Shaped[Tensor, "b ..."]
    ) -> Float[Tensor, "b ..."]:
        """The velocity implied by a score prediction."""
        t = expand_like(t, x)
        drift, var = self.drift(x, t)
        return var * score - drift

    # --- training targets ----------------------------------------------------------------
    def interpolate(
        self, t: Shaped[Tensor, "b ..."], x0: Float[Tensor, "b ..."], x1: Float[Tensor, "b ..."]
    ) -> Float[Tensor, "b ..."]:
        """``x_t = alpha_t x1 + sigma_t x0``."""
        t = expand_like(t, x1)
        alpha_t, _ = self.alpha(t)
        sigma_t, _ = self.sigma(t)
        return alpha_t * x1 + sigma_t * x0

    def velocity_target(
        self, t: Shaped[Tensor, "b ..."], x0: Float[Tensor, "b ..."], x1: Float[Tensor, "b ..."]
    ) -> Float[Tensor, "b ..."]:
        """``u_t = alpha_t' x1 + sigma_t' x0``, the conditional velocity the model regresses."""
        t = expand_like(t, x1)
        _, d_alpha_t = self.alpha(t)
        _, d_sigma_t = self.sigma(t)
        return d_alpha_t * x1 + d_sigma_t * x0


LinearPath = Path
"""The linear (rectified-flow) path, SiT's default."""


class GVPPath(Path):
    """The generalised variance-preserving path: ``alpha_t = sin(pi t / 2)``, ``sigma_t = cos(pi t / 2)``."""

    name: ClassVar[str] = "GVP"

    def alpha(self, t: Tensor) -> tuple[Coef, Coef]:
        """``(sin(pi t / 2), pi/2 cos(pi t / 2))``."""
        return torch.sin(t * math.pi / 2), math.pi / 2 * torch.cos(t * math.pi / 2)

    def sigma(self, t: Tensor) -> tuple[Coef, Coef]:
        """``(cos(pi t / 2), -pi/2 sin(pi t / 2))``."""
        return torch.cos(t * math.pi / 2), -math.pi / 2 * torch.sin(t * math.pi / 2)

    def d_alpha_alpha_ratio(self, t: Tensor) -> Coef:
        """``pi / (2 tan(pi t / 2))``."""
        return math.pi / (2 * torch.tan(t * math.pi / 2))


class VPPath(Path):
    """The variance-preserving path of score SDEs (linear beta from ``sigma_min`` to ``sigma_max``), time-flipped.

    ``log alpha_t = -(1-t)^2 (beta_max - beta_min) / 4 - (1-t) beta_min / 2`` and
    ``sigma_t = sqrt(1 - alpha_t^2)``; SiT's defaults ``beta_min = 0.1``, ``beta_max = 20``.
    """

    name: ClassVar[str] = "VP"

    def __init__(self, sigma_min: float = 0.1, sigma_max: float = 20.0) -> None:
        self.sigma_min = sigma_min
        self.sigma_max = sigma_max

    def _log_mean_coeff(self, t: Tensor) -> Tensor:
        return -0.25 * ((1 - t) ** 2) * (self.sigma_max - self.sigma_min) - 0.5 * (1 - t) * self.sigma_min

    def _d_log_mean_coeff(self, t: Tensor) -> Tensor:
        return 0.5 * (1 - t) * (self.sigma_max - self.sigma_min) + 0.5 * self.sigma_min

    def alpha(self, t: Tensor) -> tuple[Coef, Coef]:
        """``(alpha_t, alpha_t')`` with ``alpha_t = exp(log_mean_coeff(t))``."""
        alpha_t = torch.exp(self._log_mean_coeff(t))
        return alpha_t, alpha_t * self._d_log_mean_coeff(t)

    def sigma(self, t: Tensor) -> tuple[Coef, Coef]:
        """``(sqrt(1 - alpha_t^2), its derivative)``."""
        p_sigma_t = 2 * self._log_mean_coeff(t)
        sigma_t = torch.sqrt(1 - torch.exp(p_sigma_t))
        d_sigma_t = torch.exp(p_sigma_t) * (2 * self._d_log_mean_coeff(t)) / (-2 * sigma_t)
        return sigma_t, d_sigma_t

    def d_alpha_alpha_ratio(self, t: Tensor) -> Coef:
        """``d log alpha_t / dt`` in closed form."""
        return self._d_log_mean_coeff(t)

    def drift(self, x: Float[Tensor, "b ..."], t: Shaped[Tensor, "b ..."]) -> tuple[Float[Tensor, "b ..."], Coef]:
        """``(-beta_t x / 2, beta_t / 2)`` with ``beta_t = beta_min + (1 - t)(beta_max - beta_min)``."""
        t = expand_like(t, x)
        beta_t = self.sigma_min + (1 - t) * (self.sigma_max - self.sigma_min)
        return -0.5 * beta_t * x, beta_t / 2


PATHS: dict[str, type[Path]] = {"Linear": LinearPath, "GVP": GVPPath, "VP": VPPath}
"""Path name (SiT's spelling) -> class."""


def make_path(name: str) -> Path:
    """The path called ``name`` (``"Linear"``, ``"GVP"`` or ``"VP"``).

    Raises:
        ValueError: for an unknown name.
    """
    if name not in PATHS:
        raise ValueError(f"unknown path {name!r}; expected one of {sorted(PATHS)}")
    return PATHS[name]()
