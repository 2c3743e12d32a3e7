"""EDM (Karras et al. 2022) as a training objective: log-normal noise levels, preconditioned denoiser, weighted loss, Heun sampling."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

import torch
from jaxtyping import Float, Shaped
from torch import Tensor

from ..base import PointwiseLosses, register_objective
from ..sampling_spec import SamplingSpec
from .sampling import EDM_SAMPLING
from .heun import ChurnOptions, heun_sampler
from .precond import EDMDenoiser, EDMPreconditioning
from .schedule import karras_sigmas, log_normal_sigmas, sigma_ramp

__all__ = ["EDMObjective", "EDMPrediction"]

Image = Float[Tensor, "b c hh ww"]


@dataclass(frozen=True)
class EDMPrediction:
    """One preconditioned pass of a training step, before any reduction.

    Attributes:
        noisy: ``(b, c, hh, ww)`` the network's noisy input ``x_0 + sigma n`` (before ``c_in``).
        denoised: ``(b, c, hh, ww)`` the denoiser's output ``D(noisy; sigma)``.
        weighted_error: ``(b, c, hh, ww)`` ``lambda(sigma) (D - x_0)^2``, the loss per element.
    """

    noisy: Image
    denoised: Image
    weighted_error: Image


@dataclass(frozen=True)
class EDMObjective:
    """EDM's training objective and samplers, over any backbone with DiT's ``forward(x, t, y)``.

    Training draws ``ln(sigma) ~ N(p_mean, p_std^2)``, feeds the backbone
    ``c_in (x_0 + sigma n)`` at time ``c_noise = ln(sigma) / 4`` (labels and other
    inputs unchanged) and weights the squared error of ``D = c_skip x + c_out F`` by
    ``lambda(sigma) = 1 / c_out^2`` (EDM Section 5). The objective's time is ``sigma``
    itself. Sampling integrates the probability-flow ODE with Heun's method on the
    rho-spaced levels from ``sigma_max`` to ``sigma_min`` and a final 0, with EDM's
    stochastic churn as an option; guidance is a guided backbone (see
    :class:`~mdtblocks.objectives.edm.EDMDenoiser`).

    Attributes:
        sigma_data: data standard deviation of the preconditioning (0.5).
        p_mean: mean of ``ln(sigma)`` in training (-1.2).
        p_std: standard deviation of ``ln(sigma)`` in training (1.2).
        sigma_min: lowest sampling level (0.002).
        sigma_max: highest sampling level (80).
        rho: the schedule's exponent (7).
    """

    kind: ClassVar[str] = "edm"
    samplers: ClassVar[tuple[str, ...]] = ("heun", "euler")
    # recipes/sample.py's defaults and churn flags for an EDM run: Heun, MaskDiT's 40 levels (no pipeline).
    sampling: ClassVar[SamplingSpec] = EDM_SAMPLING

    sigma_data: float = 0.5
    p_mean: float = -1.2
    p_std: float = 1.2
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    rho: float = 7.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"EDMObjective.{f.name} must be a finite number, got {value!r}")
        for name in ("sigma_data", "p_std", "sigma_min", "sigma_max", "rho"):
            if getattr(self, name) <= 0:
                raise ValueError(f"EDMObjective.{name} must be positive, got {getattr(self, name)!r}")
        if self.sigma_min >= self.sigma_max:
            raise ValueError(f"sigma_min {self.sigma_min} must be below sigma_max {self.sigma_max}")

    @property
    def preconditioning(self) -> EDMPreconditioning:
        """The scalings ``c_skip``, ``c_out``, ``c_in``, ``c_noise`` for this ``sigma_data``."""
        return EDMPreconditioning(self.sigma_data)

    # --- training ------------------------------------------------------------------------
    def draw_times(self, n: int, generator: torch.Generator) -> Float[Tensor, "n"]:
        """``n`` training noise levels, log-normal (see :func:`~mdtblocks.objectives.edm.log_normal_sigmas`)."""
        return log_normal_sigmas(n, self.p_mean, self.p_std, generator)

    def draw_noise(self, x_start: Image, generator: torch.Generator) -> Image:
        """Standard normal noise like ``x_start``, drawn on ``generator``'s device and moved to ``x_start``'s."""
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        noise = torch.randn(x_start.shape, generator=generator, device=generator.device, dtype=torch.float32)
        return noise.to(device=x_start.device, dtype=x_start.dtype)

    def predict(
        self,
        net: Callable[..., Tensor],
        x_start: Image,
        times: Shaped[Tensor, "b"],
        noise: Image,
        model_kwargs: Mapping[str, Any],
    ) -> EDMPrediction:
        """The preconditioned pass and its weighted squared error per element, for given ``sigma`` and ``noise``.

        :meth:`pointwise_losses` hands it to reductions over patches (MaskDiT's,
        :mod:`mdtblocks.losses.mae`); :meth:`losses` takes the plain mean.

        Raises:
            ValueError: shapes that do not match, or non-positive levels.
        """
        b = x_start.shape[0]
        if noise.shape != x_start.shape:
            raise ValueError(f"noise has shape {tuple(noise.shape)} but x_start has {tuple(x_start.shape)}")
        if times.ndim != 1 or times.shape[0] != b:
            raise ValueError(f"times (sigma) must have shape ({b},), got {tuple(times.shape)}")
        sigma = times.to(device=x_start.device, dtype=torch.float32)
        x0 = x_start.float()
        noisy = x0 + noise.float() * sigma.view(-1, 1, 1, 1)
        denoised = self.preconditioning.denoise(net, noisy, sigma, **model_kwargs).float()
        weight = self.preconditioning.loss_weight(sigma).view(-1, 1, 1, 1)
        return EDMPrediction(noisy=noisy, denoised=denoised, weighted_error=weight * (denoised - x0) ** 2)

    def losses(
        self,
        net: Callable[..., Tensor],
        x_start: Image,
        times: Shaped[Tensor, "b"],
        noise: Image,
        model_kwargs: Mapping[str, Any],
    ) -> dict[str, Float[Tensor, "b"]]:
        """``{"loss": mean of lambda(sigma) (D - x_0)^2 per sample}`` (EDM eq. 8 with the weight of Table 1)."""
        pred = self.predict(net, x_start, times, noise, model_kwargs)
        return {"loss": pred.weighted_error.flatten(1).mean(dim=1)}

    def pointwise_losses(
        self,
        net: Callable[..., Tensor],
        x_start: Image,
        times: Shaped[Tensor, "b"],
        noise: Image,
        model_kwargs: Mapping[str, Any],
    ) -> PointwiseLosses:
        """:meth:`predict` as loss terms per element: ``"mse"`` is ``lambda(sigma) (D - x_0)^2``; the MAE
        reconstruction is the denoised ``D`` against the noisy input (MaskDiT's MAE term)."""
        pred = self.predict(net, x_start, times, noise, model_kwargs)
        return PointwiseLosses({"mse": pred.weighted_error}, noisy=pred.noisy, reconstruction=pred.denoised)

    def data_fraction(self, times: Shaped[Tensor, "b"]) -> Float[Tensor, "b"]:
        """Where ``sigma`` lies on the sampling schedule: 0 at ``sigma_max`` (and above), 1 at ``sigma_min`` (and below).

        The rho ramp of :func:`~mdtblocks.objectives.edm.sigma_ramp`: linear in the step
        index of the Heun sampler, as a diffusion step index is for the other objectives.
        """
        return sigma_ramp(times.float(), self.sigma_min, self.sigma_max, self.rho)

    # --- sampling ------------------------------------------------------------------------
    def sample(
        self,
        net: Callable[..., Tensor],
        noise: Image,
        model_kwargs: Mapping[str, Any],
        *,
        sampler: str = "heun",
        num_steps: int = 18,
        generator: torch.Generator | None = None,
        progress: bool = False,
        **options: Any,
    ) -> Image:
        """Sample from standard normal ``noise`` with the backbone ``net`` (plain or guided).

        ``num_steps`` levels from ``sigma_max`` to ``sigma_min`` (a Heun run calls the
        network ``2 num_steps - 1`` times). ``options``: EDM's churn ``S_churn``,
        ``S_min``, ``S_max``, ``S_noise`` (drawn from ``generator``), ``noise_fn`` (the
        churn noise, injected), ``callback``; ``clip_denoised`` (the pixel-space sample
        grids pass it) is accepted and ignored, as EDM's sampler does not clip its estimates.

        Raises:
            ValueError: an unknown sampler or option.
        """
        if sampler not in self.samplers:
            raise ValueError(f"unknown EDM sampler {sampler!r}; expected one of {self.samplers}")
        unknown = sorted(set(options) - _SAMPLE_OPTIONS)
        if unknown:
            raise ValueError(f"unknown EDM sampling options {unknown}; expected a subset of {sorted(_SAMPLE_OPTIONS)}")
        churn = ChurnOptions(*(
            _as_float(options.get(name, default))
            for name, default in (("S_churn", 0.0), ("S_min", 0.0), ("S_max", math.inf), ("S_noise", 1.0))
        ))
        sigmas = karras_sigmas(num_steps, self.sigma_min, self.sigma_max, self.rho, device=noise.device)
        denoiser = EDMDenoiser(net, self.preconditioning)
        x = noise.to(torch.float64) * sigmas[0]
        return heun_sampler(
            denoiser, x, sigmas, dict(model_kwargs), options.get("callback"), not progress,
            churn=churn, generator=generator, noise_fn=options.get("noise_fn"), second_order=sampler == "heun",
        ).to(noise.dtype)

    # --- record --------------------------------------------------------------------------
    def to_record(self) -> dict[str, Any]:
        """``{"kind": "edm", ...every field}`` as JSON numbers."""
        return {"kind": self.kind, **{k: float(v) for k, v in asdict(self).items()}}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> EDMObjective:
        """Rebuild from :meth:`to_record`; unknown keys are refused by name."""
        data = dict(record)
        kind = data.pop("kind", cls.kind)
        if kind != cls.kind:
            raise ValueError(f"record of kind {kind!r} is not an EDM record")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown EDM objective fields {unknown}; expected a subset of {sorted(known)}")
        return cls(**data)


def _as_float(value: Any) -> Any:
    """Integers as floats (the official command line takes ``--S_churn`` as an int); anything else unchanged, for the checks."""
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


_SAMPLE_OPTIONS = frozenset({"S_churn", "S_min", "S_max", "S_noise", "noise_fn", "callback", "clip_denoised"})

register_objective(EDMObjective.kind, EDMObjective.from_record)
