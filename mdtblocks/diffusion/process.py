"""The forward process: float64 tables, noising ``q(x_t | x_0)``, the posterior and prediction conversions."""

from __future__ import annotations

from collections.abc import Callable

import torch
from jaxtyping import Float, Int
from torch import Tensor

from .noise import gaussian_noise
from .parameterization import check_prediction, eps_from_v, eps_from_xstart, to_xstart
from .variance import check_variance_type, learns_variance
from .weighting import min_snr_weight

__all__ = ["GaussianProcess", "LOSS_TYPES"]

LOSS_TYPES: tuple[str, ...] = ("mse", "rescaled_mse", "kl", "rescaled_kl")
"""``mse`` (plus the vb term when sigma is learned), ``rescaled_mse`` (vb scaled by ``T / 1000``),
``kl`` (the variational bound alone) and ``rescaled_kl`` (the bound times ``T``)."""

Image = Float[Tensor, "b c hh ww"]
Steps = Int[Tensor, "b"]
Model = Callable[..., Float[Tensor, "b c2 hh ww"]]

# Float64 tables built once; each is looked up per sample and cast to the math dtype.
_TABLES = (
    "betas",
    "log_betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "alphas_cumprod_next",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
    "fixed_large_variance",
    "fixed_large_log_variance",
)


class GaussianProcess:
    """A discrete Gaussian diffusion process of ``T`` steps: its tables and the forward direction.

    Holds every per-step quantity in float64 (looked up per sample and cast to the
    math dtype, fp32 or fp64), the forward marginals ``q(x_t | x_0)``, the posterior
    ``q(x_{t-1} | x_t, x_0)`` and the conversions between epsilon, x0 and v. Timesteps
    ``t`` are indices into this (possibly respaced) process; ``timestep_map[t]`` are
    the steps of the original process. :class:`~mdtblocks.diffusion.GaussianDiffusion`
    adds the model: the reverse step, the samplers and the losses.

    Args:
        betas: ``(T,)`` betas in ``(0, 1]`` of this process (after respacing).
        predict: what the model predicts, one of :data:`~mdtblocks.diffusion.PREDICTIONS`.
            Sampling reads each prediction correctly (v included).
        variance_type: one of :data:`~mdtblocks.diffusion.VARIANCE_TYPES`.
        loss_type: one of :data:`LOSS_TYPES`.
        snr_gamma: min-SNR-gamma weighting of the mse term, or ``None`` for none.
        timestep_map: ``(T,)`` original step of each step of this process; identity if ``None``.
        original_num_steps: steps of the original process (default: the last mapped step + 1).

    Attributes:
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

        ab = torch.cumprod(1.0 - betas, dim=0)
        one = torch.ones(1, dtype=torch.float64)
        ab_prev = torch.cat([one, ab[:-1]])
        tab: dict[str, Tensor] = {"betas": betas, "log_betas": betas.log(), "alphas_cumprod": ab}
        tab["alphas_cumprod_prev"] = ab_prev
        tab["alphas_cumprod_next"] = torch.cat([ab[1:], torch.zeros(1, dtype=torch.float64)])
        tab["sqrt_alphas_cumprod"] = ab.sqrt()
        tab["sqrt_one_minus_alphas_cumprod"] = (1.0 - ab).sqrt()
        tab["log_one_minus_alphas_cumprod"] = (1.0 - ab).log()
        tab["sqrt_recip_alphas_cumprod"] = (1.0 / ab).sqrt()
        tab["sqrt_recipm1_alphas_cumprod"] = (1.0 / ab - 1.0).sqrt()
        # Posterior q(x_{t-1} | x_t, x_0) (Ho et al. 2020, Eq. 6-7).
        post_var = betas * (1.0 - ab_prev) / (1.0 - ab)
        tab["posterior_variance"] = post_var
        # The posterior variance is 0 at t = 0; its log is clipped to the value at t = 1.
        first = post_var[1:2] if self.num_timesteps > 1 else betas[:1]
        tab["posterior_log_variance_clipped"] = torch.cat([first, post_var[1:]]).log()
        tab["posterior_mean_coef1"] = betas * ab_prev.sqrt() / (1.0 - ab)
        tab["posterior_mean_coef2"] = (1.0 - ab_prev) * (1.0 - betas).sqrt() / (1.0 - ab)
        # Fixed-large uses beta, but the posterior variance at t = 0 for a better decoder likelihood.
        large = torch.cat([first, betas[1:]])
        tab["fixed_large_variance"] = large
        tab["fixed_large_log_variance"] = large.log()
        self._rows = {name: i for i, name in enumerate(_TABLES)}
        self._stack = torch.stack([tab[name] for name in _TABLES])
        self._on_device: dict[torch.device, Tensor] = {}
        self._map_on_device: dict[torch.device, Tensor] = {}
        for name in _TABLES:
            setattr(self, name, tab[name])

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_timesteps={self.num_timesteps}, predict={self.predict!r}, "
            f"variance_type={self.variance_type!r}, loss_type={self.loss_type!r}, snr_gamma={self.snr_gamma})"
        )

    @property
    def use_timesteps(self) -> set[int]:
        """The original steps this process visits (the official attribute)."""
        return set(self.timestep_map.tolist())

    @property
    def learn_sigma(self) -> bool:
        """Whether the model output carries variance channels."""
        return learns_variance(self.variance_type)

    # --- lookups --------------------------------------------------------------------------
    def _table(self, device: torch.device) -> Tensor:
        if device not in self._on_device:
            stack = self._stack if device.type != "mps" else self._stack.float()  # MPS has no float64
            self._on_device[device] = stack.to(device)
        return self._on_device[device]

    def coef(self, name: str, t: Steps, like: Image) -> Float[Tensor, "b 1 1 1"]:
        """Table ``name`` at each sample's step, shaped to broadcast against ``like``.

        Args:
            name: a table name such as ``"alphas_cumprod"`` or ``"posterior_variance"``.
            t: ``(b,)`` steps of this process.
            like: ``(b, c, hh, ww)`` tensor to broadcast against; gives dtype and device
                (its values are not read).

        Returns:
            ``(b, 1, 1, 1)`` values (dimensionless table entries) in ``like``'s dtype and device.
        """
        values = self._table(t.device)[self._rows[name]][t]
        return values.to(like.dtype).view(-1, *([1] * (like.ndim - 1))).to(like.device)

    def check_timesteps(self, t: object, batch: int | None = None) -> None:
        """Raise unless ``t`` is a ``(b,)`` integer tensor of steps in ``[0, num_timesteps)``.

        Values are read for CPU tensors, and for others only when :attr:`check_values`
        is set (reading them costs a host sync).

        Args:
            t: the timesteps.
            batch: the expected batch size, if known.
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

    def model_timesteps(self, t: Steps) -> Steps:
        """Original-process steps the model sees for steps ``t`` of this process.

        Args:
            t: ``(b,)`` steps of this process.

        Returns:
            ``timestep_map[t]``, in ``t``'s dtype and device.
        """
        return self._map_on(t.device)[t].to(t.dtype)

    def _map_on(self, device: torch.device) -> Tensor:
        if device not in self._map_on_device:
            self._map_on_device[device] = self.timestep_map.to(device)
        return self._map_on_device[device]

    def wrap_model(self, model: Model) -> Model:
        """``model`` called with this process's steps instead of the original ones.

        Args:
            model: a denoiser taking original-process timesteps.

        Returns:
            A callable ``(x, t, **kwargs)`` taking steps of this process.
        """
        return lambda x, t, **kwargs: model(x, self.model_timesteps(t), **kwargs)

    # --- forward process ------------------------------------------------------------------
    def q_mean_variance(self, x_start: Image, t: Steps) -> tuple[Image, Image, Image]:
        """Mean, variance and log-variance of ``q(x_t | x_0)``.

        Args:
            x_start: clean data ``x_0``.
            t: ``(b,)`` steps.

        Returns:
            ``(mean, variance, log_variance)``, each shaped like ``x_start``.
        """
        mean = self.coef("sqrt_alphas_cumprod", t, x_start) * x_start
        var = (1.0 - self.coef("alphas_cumprod", t, x_start)).expand_as(x_start)
        log_var = self.coef("log_one_minus_alphas_cumprod", t, x_start).expand_as(x_start)
        return mean, var, log_var

    def q_sample(
        self, x_start: Image, t: Steps, noise: Image | None = None, *, generator: torch.Generator | None = None
    ) -> Image:
        """Sample ``x_t ~ q(x_t | x_0)``: ``sqrt(alpha_bar) x_0 + sqrt(1 - alpha_bar) noise``.

        Args:
            x_start: clean data ``x_0``.
            t: ``(b,)`` steps.
            noise: the noise to use; drawn from ``generator`` if ``None``.
            generator: source of the noise.

        Returns:
            The noised data.
        """
        self.check_timesteps(t, x_start.shape[0])
        if noise is None:
            noise = gaussian_noise(x_start, generator)
        if noise.shape != x_start.shape:
            raise ValueError(f"noise has shape {tuple(noise.shape)} but x_start has {tuple(x_start.shape)}")
        return (
            self.coef("sqrt_alphas_cumprod", t, x_start) * x_start
            + self.coef("sqrt_one_minus_alphas_cumprod", t, x_start) * noise
        )

    def q_posterior_mean_variance(self, x_start: Image, x_t: Image, t: Steps) -> tuple[Image, Image, Image]:
        """Mean, variance and clipped log-variance of the posterior ``q(x_{t-1} | x_t, x_0)``.

        Args:
            x_start: clean data (or its estimate).
            x_t: noised data at step ``t``.
            t: ``(b,)`` steps.

        Returns:
            ``(mean, variance, log_variance_clipped)``, each shaped like ``x_t``.
        """
        if x_start.shape != x_t.shape:
            raise ValueError(f"x_start {tuple(x_start.shape)} and x_t {tuple(x_t.shape)} must have the same shape")
        mean = self.coef("posterior_mean_coef1", t, x_t) * x_start + self.coef("posterior_mean_coef2", t, x_t) * x_t
        var = self.coef("posterior_variance", t, x_t).expand_as(x_t)
        log_var = self.coef("posterior_log_variance_clipped", t, x_t).expand_as(x_t)
        return mean, var, log_var

    # --- conversions ----------------------------------------------------------------------
    def _ab_coefs(self, t: Steps, x: Image) -> tuple[Tensor, Tensor]:
        return self.coef("sqrt_alphas_cumprod", t, x), self.coef("sqrt_one_minus_alphas_cumprod", t, x)

    def _predict_xstart_from_eps(self, x_t: Image, t: Steps, eps: Image) -> Image:
        """``x_0`` from ``x_t`` and epsilon (official name)."""
        return (
            self.coef("sqrt_recip_alphas_cumprod", t, x_t) * x_t
            - self.coef("sqrt_recipm1_alphas_cumprod", t, x_t) * eps
        )

    def _predict_eps_from_xstart(self, x_t: Image, t: Steps, pred_xstart: Image) -> Image:
        """Epsilon from ``x_t`` and ``x_0`` (official name)."""
        return (self.coef("sqrt_recip_alphas_cumprod", t, x_t) * x_t - pred_xstart) / self.coef(
            "sqrt_recipm1_alphas_cumprod", t, x_t
        )

    def predict_xstart(self, prediction: Image, x_t: Image, t: Steps) -> Image:
        """``x_0`` from a prediction of this process's type (epsilon, x0 or v).

        Args:
            prediction: the model's prediction channels.
            x_t: noised data.
            t: ``(b,)`` steps.

        Returns:
            The clean-data estimate.
        """
        if self.predict == "epsilon":
            return self._predict_xstart_from_eps(x_t, t, prediction)
        return to_xstart(self.predict, x_t, prediction, *self._ab_coefs(t, x_t))

    def predict_eps(self, prediction: Image, x_t: Image, t: Steps) -> Image:
        """Epsilon from a prediction of this process's type (epsilon, x0 or v).

        Args:
            prediction: the model's prediction channels.
            x_t: noised data.
            t: ``(b,)`` steps.

        Returns:
            The noise estimate.
        """
        if self.predict == "epsilon":
            return prediction
        if self.predict == "v":
            return eps_from_v(x_t, prediction, *self._ab_coefs(t, x_t))
        return eps_from_xstart(x_t, prediction, *self._ab_coefs(t, x_t))

    def snr(self, t: Steps) -> Float[Tensor, "b"]:
        """Signal-to-noise ratio ``alpha_bar / (1 - alpha_bar)`` at steps ``t``.

        Args:
            t: ``(b,)`` steps.

        Returns:
            ``(b,)`` float32 SNRs (computed in float64).
        """
        ab = self._table(t.device)[self._rows["alphas_cumprod"]][t]
        return (ab / (1.0 - ab)).float()

    def mse_weight(self, t: Steps) -> Float[Tensor, "b"]:
        """Weight of the mse term at steps ``t``: min-SNR-gamma for :attr:`predict`, or ones.

        Args:
            t: ``(b,)`` steps.

        Returns:
            ``(b,)`` positive float32 weights.
        """
        snr_t = self.snr(t)
        if self.snr_gamma is None:
            return torch.ones_like(snr_t)
        return min_snr_weight(snr_t, self.snr_gamma, self.predict)
