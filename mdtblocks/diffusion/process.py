"""The forward process: what a process is configured with, its float64 tables, ``q(x_t | x_0)`` and the posterior.

This is the bottom of ``mdtblocks.diffusion``: it imports nothing from the package
but :mod:`~mdtblocks.diffusion.noise`. The reverse step (:mod:`~mdtblocks.diffusion.reverse`) reads a model output against
these tables; losses, loops and the bound build on that.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass, fields

import torch
from jaxtyping import Float, Int

from ..typing import Image, Tensor, Timesteps
from .noise import gaussian_noise

__all__ = [
    "GaussianProcess",
    "Tables",
    "PREDICTIONS",
    "VARIANCE_TYPES",
    "LOSS_TYPES",
    "check_prediction",
    "check_variance_type",
    "learns_variance",
    "snr",
    "min_snr_weight",
    "math_dtype",
    "fp32_math",
    "per_sample",
]

Model = Callable[..., Float[Tensor, "b c2 hh ww"]]
"""A denoiser called as ``model(x_t, t, **model_kwargs)``; ``2c`` output channels when sigma is learned."""
Coef = Float[Tensor, "b 1 1 1"]

PREDICTIONS: tuple[str, ...] = ("epsilon", "x0", "v")
"""Canonical prediction names. Aliases: ``eps``; ``x_start``, ``xstart``, ``sample``; ``velocity``, ``v_prediction``."""
_PREDICTION_ALIASES = {
    "eps": "epsilon",
    "x_start": "x0",
    "xstart": "x0",
    "start_x": "x0",
    "sample": "x0",
    "velocity": "v",
    "v_prediction": "v",
}

VARIANCE_TYPES: tuple[str, ...] = ("learned_range", "learned", "fixed_large", "fixed_small")
"""Variance types.

- ``learned_range``: the model outputs ``v`` in ``[-1, 1]`` per element; the log-variance
  interpolates between the posterior variance (``v = -1``) and beta (``v = 1``)
  (Nichol & Dhariwal 2021, Eq. 15). Default when sigma is learned.
- ``learned``: the model outputs the log-variance itself.
- ``fixed_large``: beta (with the first step set to the posterior variance). Default otherwise.
- ``fixed_small``: the posterior variance.
"""

LOSS_TYPES: tuple[str, ...] = ("mse", "rescaled_mse", "kl", "rescaled_kl")
"""``mse`` (plus the vb term when sigma is learned), ``rescaled_mse`` (vb scaled by ``T / 1000``),
``kl`` (the variational bound alone) and ``rescaled_kl`` (the bound times ``T``)."""


def check_prediction(predict: str) -> str:
    """Canonical name (``"epsilon"``, ``"x0"`` or ``"v"``) of a prediction type or alias; ``ValueError`` otherwise."""
    name = _PREDICTION_ALIASES.get(predict, predict) if isinstance(predict, str) else predict
    if name not in PREDICTIONS:
        raise ValueError(f"unknown prediction {predict!r}; expected one of {PREDICTIONS}")
    return name


def check_variance_type(variance_type: str) -> str:
    """``variance_type`` if it is one of :data:`VARIANCE_TYPES`; ``ValueError`` otherwise."""
    if variance_type not in VARIANCE_TYPES:
        raise ValueError(f"unknown variance type {variance_type!r}; expected one of {VARIANCE_TYPES}")
    return variance_type


def learns_variance(variance_type: str) -> bool:
    """Whether the model output carries variance channels (``learned_range`` and ``learned``)."""
    return variance_type in ("learned_range", "learned")


def snr(alphas_cumprod: Float[Tensor, "*s"]) -> Float[Tensor, "*s"]:
    """Signal-to-noise ratio ``alpha_bar / (1 - alpha_bar)``, elementwise."""
    return alphas_cumprod / (1.0 - alphas_cumprod)


def min_snr_weight(snr_t: Float[Tensor, "*s"], gamma: float | int, predict: str) -> Float[Tensor, "*s"]:
    """Weight that turns the raw mse of a ``predict`` model into the min-SNR-gamma loss (Hang et al. 2023).

    Min-SNR-gamma weights the x0 error ``||x0 - x0_hat||^2`` by ``min(snr, gamma)``.
    The same loss, written in the model's own target, is:

    - epsilon: ``||eps - eps_hat||^2 = snr ||x0 - x0_hat||^2``, weight ``min(snr, gamma) / snr``
      (the official MDTv2 weighting);
    - x0: weight ``min(snr, gamma)``;
    - v: ``||v - v_hat||^2 = (snr + 1) ||x0 - x0_hat||^2``, weight ``min(snr, gamma) / (snr + 1)``.

    Args:
        snr_t: SNR at each sample's timestep.
        gamma: the clamp ``gamma > 0`` (MDTv2: 5).
        predict: ``"epsilon"``, ``"x0"`` or ``"v"``.

    Returns:
        Positive finite weights, same shape as ``snr_t``.
    """
    predict = check_prediction(predict)
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not math.isfinite(gamma) or gamma <= 0:
        raise ValueError(f"snr_gamma must be a positive finite number, got {gamma!r}")
    clamped = torch.clamp(snr_t, max=float(gamma))
    if predict == "epsilon":
        return clamped / snr_t
    if predict == "x0":
        return clamped
    return clamped / (snr_t + 1.0)


def math_dtype(x: Tensor) -> torch.dtype:
    """The dtype of the diffusion math for input ``x``: float64 for float64 input, float32 otherwise."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def fp32_math(device: torch.device) -> contextlib.AbstractContextManager[None]:
    """Context in which autocast is off, so the diffusion math runs in fp32 even inside a bf16 step.

    The one precision rule of the package: the network runs under the caller's autocast,
    everything computed from its output (and the noising before it) in :func:`math_dtype`.
    """
    if device.type in ("cuda", "cpu", "xpu", "mps") and torch.is_autocast_enabled(device.type):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


@dataclass(frozen=True)
class Tables:
    """Every per-step quantity of a process, ``(T,)`` each (float64 on the CPU; see :meth:`to`)."""

    betas: Float[Tensor, "T"]
    log_betas: Float[Tensor, "T"]
    alphas_cumprod: Float[Tensor, "T"]
    alphas_cumprod_prev: Float[Tensor, "T"]
    alphas_cumprod_next: Float[Tensor, "T"]
    sqrt_alphas_cumprod: Float[Tensor, "T"]
    sqrt_one_minus_alphas_cumprod: Float[Tensor, "T"]
    log_one_minus_alphas_cumprod: Float[Tensor, "T"]
    sqrt_recip_alphas_cumprod: Float[Tensor, "T"]
    sqrt_recipm1_alphas_cumprod: Float[Tensor, "T"]
    posterior_variance: Float[Tensor, "T"]
    posterior_log_variance_clipped: Float[Tensor, "T"]
    posterior_mean_coef1: Float[Tensor, "T"]
    posterior_mean_coef2: Float[Tensor, "T"]
    fixed_large_variance: Float[Tensor, "T"]
    fixed_large_log_variance: Float[Tensor, "T"]

    @classmethod
    def from_betas(cls, betas: Float[Tensor, "T"]) -> Tables:
        """The tables of the process with these float64 betas."""
        ab = torch.cumprod(1.0 - betas, dim=0)
        ab_prev = torch.cat([torch.ones(1, dtype=torch.float64), ab[:-1]])
        # Posterior q(x_{t-1} | x_t, x_0) (Ho et al. 2020, Eq. 6-7).
        post_var = betas * (1.0 - ab_prev) / (1.0 - ab)
        # The posterior variance is 0 at t = 0; its log is clipped to the value at t = 1.
        first = post_var[1:2] if betas.shape[0] > 1 else betas[:1]
        # Fixed-large uses beta, but the posterior variance at t = 0 for a better decoder likelihood.
        large = torch.cat([first, betas[1:]])
        return cls(
            betas=betas,
            log_betas=betas.log(),
            alphas_cumprod=ab,
            alphas_cumprod_prev=ab_prev,
            alphas_cumprod_next=torch.cat([ab[1:], torch.zeros(1, dtype=torch.float64)]),
            sqrt_alphas_cumprod=ab.sqrt(),
            sqrt_one_minus_alphas_cumprod=(1.0 - ab).sqrt(),
            log_one_minus_alphas_cumprod=(1.0 - ab).log(),
            sqrt_recip_alphas_cumprod=(1.0 / ab).sqrt(),
            sqrt_recipm1_alphas_cumprod=(1.0 / ab - 1.0).sqrt(),
            posterior_variance=post_var,
            posterior_log_variance_clipped=torch.cat([first, post_var[1:]]).log(),
            posterior_mean_coef1=betas * ab_prev.sqrt() / (1.0 - ab),
            posterior_mean_coef2=(1.0 - ab_prev) * (1.0 - betas).sqrt() / (1.0 - ab),
            fixed_large_variance=large,
            fixed_large_log_variance=large.log(),
        )

    def to(self, device: torch.device) -> Tables:
        """The tables on ``device`` (float32 on MPS, which has no float64)."""
        dtype = torch.float32 if device.type == "mps" else torch.float64
        return Tables(**{f.name: getattr(self, f.name).to(device, dtype) for f in fields(self)})


def per_sample(table: Float[Tensor, "T"], t: Timesteps, like: Image) -> Coef:
    """``table[t]`` shaped ``(b, 1, 1, 1)`` to broadcast against ``like``, in its dtype and device."""
    return table[t].to(like.dtype).view(-1, *([1] * (like.ndim - 1))).to(like.device)


class GaussianProcess:
    """A discrete Gaussian diffusion process of ``T`` steps: its tables and the forward direction.

    Holds every per-step quantity in float64 (:attr:`tables`, looked up per sample and
    cast to the math dtype), the forward marginals ``q(x_t | x_0)``, the posterior
    ``q(x_{t-1} | x_t, x_0)`` and the conversions between epsilon, x0 and v. Timesteps
    ``t`` are indices into this (possibly respaced) process; ``timestep_map[t]`` are
    the steps of the original process. :class:`~mdtblocks.diffusion.GaussianDiffusion`
    adds the official method names of the reverse step, the samplers and the losses.

    Args:
        betas: ``(T,)`` betas in ``(0, 1]`` of this process (after respacing).
        predict: what the model predicts, one of :data:`PREDICTIONS`.
        variance_type: one of :data:`VARIANCE_TYPES`.
        loss_type: one of :data:`LOSS_TYPES`.
        snr_gamma: min-SNR-gamma weighting of the mse term, or ``None`` for none.
        timestep_map: ``(T,)`` original step of each step of this process; identity if ``None``.
        original_num_steps: steps of the original process (default: the last mapped step + 1).

    Attributes:
        tables: the :class:`Tables`, float64 on the CPU.
        check_values: also validate the values of accelerator timesteps (costs a host
            sync); CPU timesteps are always checked.
    """

    def __init__(
        self,
        betas: Float[Tensor, "T"],
        *,
        predict: str = "epsilon",
        variance_type: str = "learned_range",
        loss_type: str = "mse",
        snr_gamma: float | int | None = None,
        timestep_map: Int[Tensor, "T"] | None = None,
        original_num_steps: int | None = None,
    ) -> None:
        betas = torch.as_tensor(betas, dtype=torch.float64).detach().cpu()
        if betas.ndim != 1 or betas.numel() == 0:
            raise ValueError(f"betas must be a non-empty 1-D tensor, got shape {tuple(betas.shape)}")
        if not bool(((betas > 0) & (betas <= 1)).all()):
            raise ValueError(f"betas must lie in (0, 1], got range [{float(betas.min())}, {float(betas.max())}]")
        if loss_type not in LOSS_TYPES:
            raise ValueError(f"unknown loss type {loss_type!r}; expected one of {LOSS_TYPES}")
        if snr_gamma is not None:
            min_snr_weight(torch.ones(1, dtype=torch.float64), snr_gamma, "epsilon")  # validates gamma
        self.predict = check_prediction(predict)
        self.variance_type = check_variance_type(variance_type)
        self.loss_type = loss_type
        self.snr_gamma = None if snr_gamma is None else float(snr_gamma)
        self.check_values = False
        self.num_timesteps = int(betas.shape[0])
        if timestep_map is None:
            timestep_map = torch.arange(self.num_timesteps)
        self.timestep_map = torch.as_tensor(timestep_map, dtype=torch.int64).cpu()
        if self.timestep_map.shape != (self.num_timesteps,):
            raise ValueError(
                f"timestep_map has shape {tuple(self.timestep_map.shape)}, expected ({self.num_timesteps},)"
            )
        last = int(self.timestep_map.max()) + 1
        self.original_num_steps = last if original_num_steps is None else int(original_num_steps)
        if self.original_num_steps < last:
            raise ValueError(f"original_num_steps {self.original_num_steps} is below the mapped step {last - 1}")
        self.tables = Tables.from_betas(betas)
        self._on_device: dict[torch.device, tuple[Tables, Tensor]] = {}

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_timesteps={self.num_timesteps}, predict={self.predict!r}, "
            f"variance_type={self.variance_type!r}, loss_type={self.loss_type!r}, snr_gamma={self.snr_gamma})"
        )

    @property
    def learn_sigma(self) -> bool:
        """Whether the model output carries variance channels."""
        return learns_variance(self.variance_type)

    def tables_on(self, device: torch.device) -> Tables:
        """:attr:`tables` on ``device``, copied once per device."""
        return self._cached(device)[0]

    def _cached(self, device: torch.device) -> tuple[Tables, Tensor]:
        if device not in self._on_device:
            self._on_device[device] = (self.tables.to(device), self.timestep_map.to(device))
        return self._on_device[device]

    def check_timesteps(self, t: object, batch: int | None = None) -> None:
        """Raise unless ``t`` is a ``(b,)`` integer tensor of steps in ``[0, num_timesteps)``.

        Values are read for CPU tensors, and for others only when :attr:`check_values`
        is set (reading them costs a host sync).
        """
        if not isinstance(t, Tensor):
            raise TypeError(f"timesteps t must be a torch.Tensor, got {type(t).__name__}")
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise TypeError(f"timesteps t must be an integer tensor of step indices, got dtype {t.dtype}")
        if t.ndim != 1 or (batch is not None and t.shape[0] != batch):
            raise ValueError(
                f"timesteps t must have shape ({batch if batch is not None else 'b'},), got {tuple(t.shape)}"
            )
        if t.numel() and (t.device.type == "cpu" or self.check_values):
            lo, hi = int(t.min()), int(t.max())
            if lo < 0 or hi >= self.num_timesteps:
                raise ValueError(
                    f"timesteps t span [{lo}, {hi}], outside this {self.num_timesteps}-step schedule: "
                    f"expected steps in [0, {self.num_timesteps - 1}]"
                )

    def model_timesteps(self, t: Timesteps) -> Timesteps:
        """``timestep_map[t]``: the original-process steps the model sees, in ``t``'s dtype and device."""
        return self._cached(t.device)[1][t].to(t.dtype)

    # --- forward process ------------------------------------------------------------------
    def q_mean_variance(self, x_start: Image, t: Timesteps) -> tuple[Image, Image, Image]:
        """Mean, variance and log-variance of ``q(x_t | x_0)``, each shaped like ``x_start``."""
        tab = self.tables_on(t.device)
        mean = per_sample(tab.sqrt_alphas_cumprod, t, x_start) * x_start
        var = (1.0 - per_sample(tab.alphas_cumprod, t, x_start)).expand_as(x_start)
        log_var = per_sample(tab.log_one_minus_alphas_cumprod, t, x_start).expand_as(x_start)
        return mean, var, log_var

    def q_sample(
        self, x_start: Image, t: Timesteps, noise: Image | None = None, *, generator: torch.Generator | None = None
    ) -> Image:
        """Sample ``x_t ~ q(x_t | x_0)``: ``sqrt(alpha_bar) x_0 + sqrt(1 - alpha_bar) noise``.

        Args:
            x_start: clean data ``x_0``.
            t: ``(b,)`` steps.
            noise: the noise to use; drawn from ``generator`` if ``None``.
            generator: source of the noise.
        """
        self.check_timesteps(t, x_start.shape[0])
        if noise is None:
            noise = gaussian_noise(x_start, generator)
        if noise.shape != x_start.shape:
            raise ValueError(f"noise has shape {tuple(noise.shape)} but x_start has {tuple(x_start.shape)}")
        tab = self.tables_on(t.device)
        return (
            per_sample(tab.sqrt_alphas_cumprod, t, x_start) * x_start
            + per_sample(tab.sqrt_one_minus_alphas_cumprod, t, x_start) * noise
        )

    def q_posterior_mean_variance(self, x_start: Image, x_t: Image, t: Timesteps) -> tuple[Image, Image, Image]:
        """Mean, variance and clipped log-variance of the posterior ``q(x_{t-1} | x_t, x_0)``, shaped like ``x_t``."""
        if x_start.shape != x_t.shape:
            raise ValueError(f"x_start {tuple(x_start.shape)} and x_t {tuple(x_t.shape)} must have the same shape")
        tab = self.tables_on(t.device)
        mean = (
            per_sample(tab.posterior_mean_coef1, t, x_t) * x_start + per_sample(tab.posterior_mean_coef2, t, x_t) * x_t
        )
        var = per_sample(tab.posterior_variance, t, x_t).expand_as(x_t)
        log_var = per_sample(tab.posterior_log_variance_clipped, t, x_t).expand_as(x_t)
        return mean, var, log_var

    # --- conversions: with a = sqrt(alpha_bar), s = sqrt(1 - alpha_bar), x_t = a x0 + s eps and
    # v = a eps - s x0 (Salimans & Ho 2022), any one prediction gives the other two. -----------
    def coefs(self, t: Timesteps, like: Image) -> tuple[Coef, Coef]:
        """``(a, s) = (sqrt(alpha_bar_t), sqrt(1 - alpha_bar_t))`` per sample, shaped ``(b, 1, 1, 1)``."""
        tab = self.tables_on(t.device)
        return per_sample(tab.sqrt_alphas_cumprod, t, like), per_sample(tab.sqrt_one_minus_alphas_cumprod, t, like)

    def xstart_from_eps(self, x_t: Image, t: Timesteps, eps: Image) -> Image:
        """``x0 = x_t / a - eps sqrt(1 / a^2 - 1)``, in the official form (``_predict_xstart_from_eps``)."""
        tab = self.tables_on(t.device)
        return per_sample(tab.sqrt_recip_alphas_cumprod, t, x_t) * x_t - per_sample(
            tab.sqrt_recipm1_alphas_cumprod, t, x_t
        ) * eps

    def eps_from_xstart(self, x_t: Image, t: Timesteps, x_start: Image) -> Image:
        """``eps = (x_t / a - x0) / sqrt(1 / a^2 - 1)``, in the official form (``_predict_eps_from_xstart``)."""
        tab = self.tables_on(t.device)
        return (per_sample(tab.sqrt_recip_alphas_cumprod, t, x_t) * x_t - x_start) / per_sample(
            tab.sqrt_recipm1_alphas_cumprod, t, x_t
        )

    def xstart_from_v(self, x_t: Image, t: Timesteps, v: Image) -> Image:
        """``x0 = a x_t - s v``."""
        a, s = self.coefs(t, x_t)
        return a * x_t - s * v

    def eps_from_v(self, x_t: Image, t: Timesteps, v: Image) -> Image:
        """``eps = s x_t + a v``."""
        a, s = self.coefs(t, x_t)
        return s * x_t + a * v

    def v_from_xstart_eps(self, x_start: Image, t: Timesteps, eps: Image) -> Image:
        """``v = a eps - s x0``, the v-prediction target."""
        a, s = self.coefs(t, x_start)
        return a * eps - s * x_start

    def to_xstart(self, prediction: Image, x_t: Image, t: Timesteps) -> Image:
        """``x0`` from a prediction of this process's type (:attr:`predict`: epsilon, x0 or v)."""
        if self.predict == "epsilon":
            return self.xstart_from_eps(x_t, t, prediction)
        return prediction if self.predict == "x0" else self.xstart_from_v(x_t, t, prediction)

    def to_eps(self, prediction: Image, x_t: Image, t: Timesteps) -> Image:
        """Epsilon from a prediction of this process's type (:attr:`predict`: epsilon, x0 or v)."""
        if self.predict == "epsilon":
            return prediction
        return self.eps_from_v(x_t, t, prediction) if self.predict == "v" else self.eps_from_xstart(x_t, t, prediction)

    def target(self, x_start: Image, t: Timesteps, noise: Image) -> Image:
        """What the model should predict for ``x_t = q_sample(x_start, t, noise)``: noise, ``x_start`` or v."""
        if self.predict == "epsilon":
            return noise
        return x_start if self.predict == "x0" else self.v_from_xstart_eps(x_start, t, noise)

    def snr(self, t: Timesteps) -> Float[Tensor, "b"]:
        """``(b,)`` float32 signal-to-noise ratios at steps ``t`` (computed in float64)."""
        return snr(self.tables_on(t.device).alphas_cumprod[t]).float()

    def mse_weight(self, t: Timesteps) -> Float[Tensor, "b"]:
        """``(b,)`` positive float32 weights of the mse term at steps ``t``: min-SNR-gamma, or ones."""
        snr_t = self.snr(t)
        if self.snr_gamma is None:
            return torch.ones_like(snr_t)
        return min_snr_weight(snr_t, self.snr_gamma, self.predict)
