"""The Gaussian diffusion (DDPM / DiT / MDT) as an :class:`~mdtblocks.objectives.Objective`.

Its time is the step index ``t`` in ``[0, diffusion_steps)`` of the discrete process,
drawn uniformly; the network sees ``t`` itself (the original process's steps). The
math (schedules, losses, the DDPM and DDIM loops) lives in :mod:`mdtblocks.diffusion`;
this module only chooses it from the recorded options.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import torch
from jaxtyping import Float, Shaped
from torch import Tensor

from ..diffusion.factory import create_diffusion
from ..diffusion.gaussian import GaussianDiffusion
from ..diffusion.losses import element_training_losses, training_losses
from ..diffusion.noise import gaussian_noise
from ..diffusion.process import fp32_math, math_dtype
from .base import Image, PointwiseLosses, register_objective
from .sampling_spec import SamplingSpec

__all__ = ["GaussianObjective"]


@dataclass(frozen=True)
class GaussianObjective:
    """The Gaussian diffusion of DiT, MDT and MDTv2, with the options of :func:`~mdtblocks.create_diffusion`.

    Attributes:
        sampling: what a sampling command offers (``--sampler ddpm | ddim | dpm-solver``, by
            default DDPM with 250 steps) and the pipeline's scheduler (DDIM).
        noise_schedule: ``"linear"`` or ``"cosine"`` (``None`` only for a wrapped process of other betas).
        diffusion_steps: steps ``T`` of the training process (the times are ``0 .. T-1``).
        learn_sigma: the network outputs learned-range variance channels.
        predict: ``"epsilon"``, ``"x0"`` or ``"v"``.
        snr_gamma: min-SNR-gamma weighting of the mse term (MDTv2: 5), or ``None``.
        sigma_small: with a fixed variance, the posterior variance instead of beta.
        use_kl: train on the variational bound alone.
        rescale_learned_sigmas: scale the vb term by ``T / 1000``.
        diffusion: the training process these options build (or the one given to
            :meth:`from_process`).
    """

    kind: ClassVar[str] = "gaussian"
    samplers: ClassVar[tuple[str, ...]] = ("ddpm", "ddim", "dpm_solver++")
    # The papers' evaluation: DDPM, 250 steps; exported pipelines run diffusers' DDIM on the same betas.
    sampling: ClassVar[SamplingSpec] = SamplingSpec(
        default_sampler="ddpm", default_steps=250, flag_names={"dpm_solver++": "dpm-solver"}, pipeline_scheduler="ddim"
    )

    noise_schedule: str | None = "linear"
    diffusion_steps: int = 1000
    learn_sigma: bool = True
    predict: str = "epsilon"
    snr_gamma: float | int | None = None
    sigma_small: bool = False
    use_kl: bool = False
    rescale_learned_sigmas: bool = False
    diffusion: GaussianDiffusion | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.snr_gamma is not None:
            object.__setattr__(self, "snr_gamma", float(self.snr_gamma))
        if self.diffusion is None:
            object.__setattr__(self, "diffusion", create_diffusion("", **self._options()))
        elif not isinstance(self.diffusion, GaussianDiffusion):
            raise TypeError(f"diffusion must be a GaussianDiffusion, got {type(self.diffusion).__name__}")

    @classmethod
    def from_process(cls, diffusion: GaussianDiffusion) -> GaussianObjective:
        """Wrap a ready process (e.g. ``create_diffusion(snr_gamma=5)``); its options are read back where they can be.

        The schedule is not stored in a process, so such an objective records ``noise_schedule``
        only when its betas are those of a named schedule; otherwise :meth:`to_record` refuses.
        """
        return cls(
            noise_schedule=_schedule_of(diffusion), diffusion_steps=diffusion.original_num_steps,
            learn_sigma=diffusion.variance_type == "learned_range", predict=diffusion.predict,
            snr_gamma=diffusion.snr_gamma, sigma_small=diffusion.variance_type == "fixed_small",
            use_kl=diffusion.loss_type == "rescaled_kl", rescale_learned_sigmas=diffusion.loss_type == "rescaled_mse",
            diffusion=diffusion,
        )

    def _options(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "diffusion"}

    # --- training ---------------------------------------------------------------------
    def draw_times(self, n: int, generator: torch.Generator) -> Shaped[Tensor, "n"]:
        """``n`` steps uniform in ``[0, num_timesteps)``, drawn on ``generator``'s device."""
        return torch.randint(0, self.diffusion.num_timesteps, (n,), generator=generator, device=generator.device)

    def draw_noise(self, x_start: Image, generator: torch.Generator) -> Image:
        """Standard normal noise like ``x_start`` in the math dtype (fp32; fp64 for fp64 input), on its device."""
        with fp32_math(x_start.device):
            return gaussian_noise(x_start.to(math_dtype(x_start)), generator)

    def losses(
        self,
        net: Callable[..., Tensor],
        x_start: Image,
        times: Shaped[Tensor, "b"],
        noise: Image,
        model_kwargs: Mapping[str, Any],
    ) -> dict[str, Float[Tensor, "b"]]:
        """``"loss"``, ``"mse"`` and (learned sigma) ``"vb"`` of one pass (:func:`~mdtblocks.diffusion.training_losses`)."""
        return training_losses(self.diffusion, net, x_start, times, dict(model_kwargs), noise)

    def pointwise_losses(
        self,
        net: Callable[..., Tensor],
        x_start: Image,
        times: Shaped[Tensor, "b"],
        noise: Image,
        model_kwargs: Mapping[str, Any],
    ) -> PointwiseLosses:
        """The terms of :meth:`losses` per element (:func:`~mdtblocks.diffusion.losses.element_training_losses`).

        ``"mse"`` and, with learned sigma, ``"vb"``: the variational bound's term per
        element, so that over a subset of patches (MaskDiT's visible ones) it is the mean
        of the bound's terms on that subset. The MAE reconstruction is the network's
        prediction channels (epsilon, ``x_0`` or ``v``, as :attr:`predict` says).
        """
        out = element_training_losses(self.diffusion, net, x_start, times, dict(model_kwargs), noise)
        return PointwiseLosses(out.terms, noisy=out.x_t, reconstruction=out.prediction)

    def data_fraction(self, times: Shaped[Tensor, "b"]) -> Float[Tensor, "b"]:
        """``1 - t / T`` for the original process's steps ``t`` (what the network, and guidance, see)."""
        return 1.0 - times.float() / self.diffusion_steps

    # --- sampling ---------------------------------------------------------------------
    def sample(
        self,
        net: Callable[..., Tensor],
        noise: Image,
        model_kwargs: Mapping[str, Any],
        *,
        sampler: str,
        num_steps: int,
        generator: torch.Generator | None = None,
        progress: bool = False,
        **options: Any,
    ) -> Image:
        """DDPM (respaced to ``num_steps``), DDIM (``"ddimN"``) or diffusers' DPM-Solver++ from ``noise``.

        Options: ``eta`` (DDIM) and ``clip_denoised`` (DDPM, DDIM).
        """
        if sampler not in self.samplers:
            raise ValueError(f"unknown sampler {sampler!r} for the {self.kind} objective; expected one of {self.samplers}")
        unknown = set(options) - {"eta", "clip_denoised"}
        if unknown:
            raise TypeError(f"unknown sampling options {sorted(unknown)} for the {self.kind} objective")
        eta, clip = float(options.get("eta", 0.0)), bool(options.get("clip_denoised", False))
        kwargs = dict(model_kwargs)
        if sampler == "dpm_solver++":
            if clip:
                raise ValueError("clip_denoised=True is supported by the 'ddpm' and 'ddim' samplers, not 'dpm_solver++'")
            from ..diffusion.schedulers import diffusers_sample_loop

            scheduler = self.diffusers_scheduler("dpm_solver++")
            return diffusers_sample_loop(net, scheduler, noise.shape, noise, num_steps, kwargs, progress, generator)
        respacing = f"ddim{num_steps}" if sampler == "ddim" else str(num_steps)
        options_ = self._options()
        process = create_diffusion(respacing, **options_)
        if sampler == "ddim":
            return process.ddim_sample_loop(net, noise.shape, noise, clip, kwargs, eta, progress, generator)
        return process.p_sample_loop(net, noise.shape, noise, clip, kwargs, progress, generator)

    def diffusers_scheduler(self, kind: str = "ddim") -> Any:
        """The diffusers scheduler ``kind`` over exactly this process's betas (:func:`~mdtblocks.sampling.make_scheduler`)."""
        from ..diffusion.schedulers import make_scheduler

        return make_scheduler(
            kind, noise_schedule=self.noise_schedule, diffusion_steps=self.diffusion_steps, predict=self.predict,
            learn_sigma=self.learn_sigma,
        )

    # --- record -----------------------------------------------------------------------
    def to_record(self) -> dict[str, Any]:
        """``{"kind": "gaussian", ...every option}``; refused for a process whose schedule has no name."""
        if self.noise_schedule is None:
            raise ValueError(
                "this GaussianObjective wraps a process whose betas are not a named schedule; build it from "
                "options (GaussianObjective(noise_schedule=..., ...)) to record it in a run"
            )
        record = self._options()
        if record["snr_gamma"] is not None:
            record["snr_gamma"] = float(record["snr_gamma"])
        return {"kind": self.kind, **record}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> GaussianObjective:
        """Rebuild from :meth:`to_record`'s output (unknown options are refused)."""
        options = {k: v for k, v in record.items() if k != "kind"}
        known = {f.name for f in fields(cls)} - {"diffusion"}
        unknown = set(options) - known
        if unknown:
            raise ValueError(f"unknown options {sorted(unknown)} in a gaussian objective record; known: {sorted(known)}")
        return cls(**options)


def _schedule_of(diffusion: GaussianDiffusion) -> str | None:
    """The named schedule whose (respaced) betas ``diffusion`` has, or ``None``."""
    from ..diffusion.schedules import SCHEDULES, named_betas

    steps = diffusion.original_num_steps
    if diffusion.num_timesteps != steps:
        return None
    for name in SCHEDULES:
        ours, betas = diffusion.tables.betas.cpu(), named_betas(name, steps)
        if betas.shape == ours.shape and torch.allclose(betas.to(ours.dtype), ours, rtol=1e-6, atol=1e-12):
            return name
    return None


register_objective(GaussianObjective.kind, GaussianObjective.from_record)
