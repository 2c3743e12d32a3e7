"""The reverse process around a model: ``p_mean_variance``, DDPM and DDIM steps, loops and losses."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from .noise import gaussian_noise
from .process import GaussianProcess
from .variance import interpolate_log_variance, split_model_output

__all__ = ["GaussianDiffusion"]

Image = Float[Tensor, "b c hh ww"]
Steps = Int[Tensor, "b"]
Model = Callable[..., Float[Tensor, "b c2 hh ww"]]


class GaussianDiffusion(GaussianProcess):
    """A Gaussian diffusion process and how a model's output is read, under the official method names.

    The public methods keep the official (ADM / DiT / MDT) names and signatures:
    ``q_sample``, ``q_posterior_mean_variance``, ``p_mean_variance``, ``p_sample``,
    ``p_sample_loop``, ``ddim_sample``, ``ddim_sample_loop``, ``training_losses``.
    Timesteps ``t`` are indices into this (possibly respaced) process; the model is
    called with ``timestep_map[t]``, the steps of the original process it was trained on.
    Unlike the official code, a v-prediction model is also sampled as v.
    Build one with :func:`~mdtblocks.create_diffusion`.

    Args:
        betas: ``(T,)`` betas in ``(0, 1]`` of this process (after respacing).
        predict: what the model predicts, one of :data:`~mdtblocks.diffusion.PREDICTIONS`.
        variance_type: one of :data:`~mdtblocks.diffusion.VARIANCE_TYPES`.
        loss_type: one of :data:`~mdtblocks.diffusion.LOSS_TYPES`.
        snr_gamma: min-SNR-gamma weighting of the mse term, or ``None`` for none.
        timestep_map: ``(T,)`` original step of each step of this process; identity if ``None``.
        original_num_steps: steps of the original process (default: the last mapped step + 1).

    Attributes:
        check_values: also validate the values of accelerator timesteps (costs a host
            sync); CPU timesteps are always checked.
    """

    # --- reverse process ------------------------------------------------------------------
    def p_mean_variance(
        self,
        model: Model,
        x: Image,
        t: Steps,
        clip_denoised: bool = True,
        denoised_fn: Callable[[Image], Image] | None = None,
        model_kwargs: dict[str, Any] | None = None,
    ) -> dict[str, Image]:
        """Apply the model and read off ``p(x_{t-1} | x_t)`` and the ``x_0`` estimate.

        Args:
            model: called as ``model(x, timestep_map[t], **model_kwargs)``.
            x: ``x_t``.
            t: ``(b,)`` steps of this process.
            clip_denoised: clamp the ``x_0`` estimate to ``[-1, 1]``.
            denoised_fn: applied to the ``x_0`` estimate before clipping.
            model_kwargs: extra model arguments (e.g. ``{"y": y}``).

        Returns:
            ``"mean"``, ``"variance"``, ``"log_variance"`` and ``"pred_xstart"``, all shaped like
            ``x``, in fp32 (fp64 for fp64 ``x``).
        """
        self.check_timesteps(t, x.shape[0])
        output = model(x, self.model_timesteps(t), **(model_kwargs or {}))
        return self.p_mean_variance_from_output(output, x, t, clip_denoised=clip_denoised, denoised_fn=denoised_fn)

    def p_mean_variance_from_output(
        self,
        model_output: Float[Tensor, "b c2 hh ww"],
        x: Image,
        t: Steps,
        clip_denoised: bool = True,
        denoised_fn: Callable[[Image], Image] | None = None,
    ) -> dict[str, Image]:
        """:meth:`p_mean_variance` for an already computed model output.

        Args:
            model_output: ``c`` (fixed variance) or ``2c`` (learned) channels.
            x: ``x_t``.
            t: ``(b,)`` steps of this process.
            clip_denoised: clamp the ``x_0`` estimate to ``[-1, 1]``.
            denoised_fn: applied to the ``x_0`` estimate before clipping.

        Returns:
            As :meth:`p_mean_variance`.
        """
        self.check_timesteps(t, x.shape[0])
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        x = x.to(dtype)
        prediction, var_values = split_model_output(model_output.to(dtype), x.shape[1], self.variance_type)
        if self.variance_type == "learned_range":
            assert var_values is not None
            min_log = self.coef("posterior_log_variance_clipped", t, x)
            log_var = interpolate_log_variance(var_values, min_log, self.coef("log_betas", t, x))
            variance = torch.exp(log_var)
        elif self.variance_type == "learned":
            assert var_values is not None
            log_var, variance = var_values, torch.exp(var_values)
        else:
            large = self.variance_type == "fixed_large"
            var_name = "fixed_large_variance" if large else "posterior_variance"
            log_name = "fixed_large_log_variance" if large else "posterior_log_variance_clipped"
            variance = self.coef(var_name, t, x).expand_as(x)
            log_var = self.coef(log_name, t, x).expand_as(x)

        pred_xstart = self.predict_xstart(prediction, x, t)
        if denoised_fn is not None:
            pred_xstart = denoised_fn(pred_xstart)
        if clip_denoised:
            pred_xstart = pred_xstart.clamp(-1, 1)
        mean, _, _ = self.q_posterior_mean_variance(pred_xstart, x, t)
        return {"mean": mean, "variance": variance, "log_variance": log_var, "pred_xstart": pred_xstart}

    def p_sample(
        self,
        model: Model,
        x: Image,
        t: Steps,
        clip_denoised: bool = True,
        denoised_fn: Callable[[Image], Image] | None = None,
        model_kwargs: dict[str, Any] | None = None,
        *,
        generator: torch.Generator | None = None,
        noise: Image | None = None,
    ) -> dict[str, Image]:
        """One ancestral step ``x_{t-1} ~ p(x_{t-1} | x_t)`` (no noise at ``t = 0``).

        Args:
            model: the denoiser (see :meth:`p_mean_variance`).
            x: ``x_t``.
            t: ``(b,)`` steps.
            clip_denoised: clamp the ``x_0`` estimate to ``[-1, 1]``.
            denoised_fn: applied to the ``x_0`` estimate before clipping.
            model_kwargs: extra model arguments.
            generator: source of the step noise.
            noise: the step noise itself (overrides ``generator``).

        Returns:
            ``"sample"`` (``x_{t-1}``), ``"pred_xstart"`` and the :meth:`p_mean_variance` entries.
        """
        out = self.p_mean_variance(model, x, t, clip_denoised, denoised_fn, model_kwargs)
        if noise is None:
            noise = gaussian_noise(out["mean"], generator)
        nonzero = (t != 0).to(out["mean"].dtype).view(-1, *([1] * (x.ndim - 1)))
        out["sample"] = out["mean"] + nonzero * torch.exp(0.5 * out["log_variance"]) * noise
        return out

    def ddim_sample(
        self,
        model: Model,
        x: Image,
        t: Steps,
        clip_denoised: bool = True,
        denoised_fn: Callable[[Image], Image] | None = None,
        model_kwargs: dict[str, Any] | None = None,
        eta: float | int = 0.0,
        *,
        generator: torch.Generator | None = None,
        noise: Image | None = None,
    ) -> dict[str, Image]:
        """One DDIM step (Song et al. 2021, Eq. 12); ``eta = 0`` is deterministic and draws no noise.

        Args:
            model: the denoiser (see :meth:`p_mean_variance`).
            x: ``x_t``.
            t: ``(b,)`` steps.
            clip_denoised: clamp the ``x_0`` estimate to ``[-1, 1]``.
            denoised_fn: applied to the ``x_0`` estimate before clipping.
            model_kwargs: extra model arguments.
            eta: 0 for DDIM, 1 for DDPM-like stochasticity.
            generator: source of the step noise (used only when ``eta > 0``).
            noise: the step noise itself (overrides ``generator``).

        Returns:
            ``"sample"`` (``x_{t-1}``) and ``"pred_xstart"``.
        """
        if eta < 0:
            raise ValueError(f"eta must be non-negative, got {eta}")
        out = self.p_mean_variance(model, x, t, clip_denoised, denoised_fn, model_kwargs)
        x = x.to(out["mean"].dtype)
        # Re-derive epsilon from the (possibly clipped) x_0 estimate, whatever the model predicts.
        eps = self._predict_eps_from_xstart(x, t, out["pred_xstart"])
        ab = self.coef("alphas_cumprod", t, x)
        ab_prev = self.coef("alphas_cumprod_prev", t, x)
        sigma = eta * torch.sqrt((1 - ab_prev) / (1 - ab)) * torch.sqrt(1 - ab / ab_prev)
        sample = out["pred_xstart"] * torch.sqrt(ab_prev) + torch.sqrt(1 - ab_prev - sigma**2) * eps
        if eta > 0:
            if noise is None:
                noise = gaussian_noise(x, generator)
            nonzero = (t != 0).to(x.dtype).view(-1, *([1] * (x.ndim - 1)))
            sample = sample + nonzero * sigma * noise
        return {"sample": sample, "pred_xstart": out["pred_xstart"]}

    def ddim_reverse_sample(
        self,
        model: Model,
        x: Image,
        t: Steps,
        clip_denoised: bool = True,
        denoised_fn: Callable[[Image], Image] | None = None,
        model_kwargs: dict[str, Any] | None = None,
        eta: float | int = 0.0,
    ) -> dict[str, Image]:
        """One deterministic DDIM step forward in time, ``x_t -> x_{t+1}`` (encoding).

        Args:
            model: the denoiser (see :meth:`p_mean_variance`).
            x: ``x_t``.
            t: ``(b,)`` steps.
            clip_denoised: clamp the ``x_0`` estimate to ``[-1, 1]``.
            denoised_fn: applied to the ``x_0`` estimate before clipping.
            model_kwargs: extra model arguments.
            eta: must be 0 (the reverse ODE is deterministic).

        Returns:
            ``"sample"`` (``x_{t+1}``) and ``"pred_xstart"``.
        """
        if eta != 0.0:
            raise ValueError(f"the reverse DDIM ODE is deterministic; eta must be 0, got {eta}")
        out = self.p_mean_variance(model, x, t, clip_denoised, denoised_fn, model_kwargs)
        x = x.to(out["mean"].dtype)
        eps = self._predict_eps_from_xstart(x, t, out["pred_xstart"])
        ab_next = self.coef("alphas_cumprod_next", t, x)
        sample = out["pred_xstart"] * torch.sqrt(ab_next) + torch.sqrt(1 - ab_next) * eps
        return {"sample": sample, "pred_xstart": out["pred_xstart"]}

    # --- loops and losses (official method names; the code is in loops.py and losses.py) --
    def p_sample_loop(
        self,
        model: Model,
        shape: Sequence[int],
        noise: Image | None = None,
        clip_denoised: bool = True,
        model_kwargs: dict[str, Any] | None = None,
        progress: bool = False,
        generator: torch.Generator | None = None,
        *,
        device: torch.device | str | None = None,
        denoised_fn: Callable[[Image], Image] | None = None,
    ) -> Image:
        """DDPM ancestral sampling over every step of this process (``"250"``: the papers' protocol).

        Args:
            model: the denoiser, or a guided model from :func:`~mdtblocks.classifier_free_guidance`.
            shape: ``(b, c, hh, ww)`` of the samples.
            noise: the initial ``x_T``; drawn from ``generator`` when ``None``.
            clip_denoised: clamp ``x_0`` estimates to ``[-1, 1]`` (``False`` for latents).
            model_kwargs: extra model arguments, e.g. ``{"y": y}``.
            progress: show a tqdm progress bar.
            generator: source of all noise.
            device: where to sample when ``noise`` is not given (default: the model's device).
            denoised_fn: applied to each ``x_0`` estimate before clipping.

        Returns:
            The samples.
        """
        from . import loops  # loops.py builds on this class

        return loops.p_sample_loop(
            self,
            model,
            shape,
            noise,
            clip_denoised,
            model_kwargs,
            progress,
            generator,
            device=device,
            denoised_fn=denoised_fn,
        )

    def p_sample_loop_progressive(
        self,
        model: Model,
        shape: Sequence[int],
        noise: Image | None = None,
        clip_denoised: bool = True,
        model_kwargs: dict[str, Any] | None = None,
        progress: bool = False,
        generator: torch.Generator | None = None,
        *,
        device: torch.device | str | None = None,
        denoised_fn: Callable[[Image], Image] | None = None,
    ) -> Iterator[dict[str, Image]]:
        """Yield the :meth:`p_sample` output of every step of :meth:`p_sample_loop`.

        Args:
            model: as in :meth:`p_sample_loop`.
            shape: as in :meth:`p_sample_loop`.
            noise: as in :meth:`p_sample_loop`.
            clip_denoised: as in :meth:`p_sample_loop`.
            model_kwargs: as in :meth:`p_sample_loop`.
            progress: as in :meth:`p_sample_loop`.
            generator: as in :meth:`p_sample_loop`.
            device: as in :meth:`p_sample_loop`.
            denoised_fn: as in :meth:`p_sample_loop`.

        Returns:
            An iterator over per-step dicts (``"sample"``, ``"pred_xstart"``, ...).
        """
        from . import loops

        return loops.p_sample_loop_progressive(
            self,
            model,
            shape,
            noise,
            clip_denoised,
            model_kwargs,
            progress,
            generator,
            device=device,
            denoised_fn=denoised_fn,
        )

    def ddim_sample_loop(
        self,
        model: Model,
        shape: Sequence[int],
        noise: Image | None = None,
        clip_denoised: bool = True,
        model_kwargs: dict[str, Any] | None = None,
        eta: float | int = 0.0,
        progress: bool = False,
        generator: torch.Generator | None = None,
        *,
        device: torch.device | str | None = None,
        denoised_fn: Callable[[Image], Image] | None = None,
    ) -> Image:
        """DDIM sampling over every step of this process (e.g. ``"ddim50"``).

        Args:
            model: the denoiser, or a guided model from :func:`~mdtblocks.classifier_free_guidance`.
            shape: ``(b, c, hh, ww)`` of the samples.
            noise: the initial ``x_T``; drawn from ``generator`` when ``None``.
            clip_denoised: clamp ``x_0`` estimates to ``[-1, 1]`` (``False`` for latents).
            model_kwargs: extra model arguments, e.g. ``{"y": y}``.
            eta: DDIM stochasticity; 0 is deterministic.
            progress: show a tqdm progress bar.
            generator: source of the initial noise and, for ``eta > 0``, the step noise.
            device: where to sample when ``noise`` is not given (default: the model's device).
            denoised_fn: applied to each ``x_0`` estimate before clipping.

        Returns:
            The samples.
        """
        from . import loops

        return loops.ddim_sample_loop(
            self,
            model,
            shape,
            noise,
            clip_denoised,
            model_kwargs,
            eta,
            progress,
            generator,
            device=device,
            denoised_fn=denoised_fn,
        )

    def ddim_sample_loop_progressive(
        self,
        model: Model,
        shape: Sequence[int],
        noise: Image | None = None,
        clip_denoised: bool = True,
        model_kwargs: dict[str, Any] | None = None,
        eta: float | int = 0.0,
        progress: bool = False,
        generator: torch.Generator | None = None,
        *,
        device: torch.device | str | None = None,
        denoised_fn: Callable[[Image], Image] | None = None,
    ) -> Iterator[dict[str, Image]]:
        """Yield the :meth:`ddim_sample` output of every step of :meth:`ddim_sample_loop`.

        Args:
            model: as in :meth:`ddim_sample_loop`.
            shape: as in :meth:`ddim_sample_loop`.
            noise: as in :meth:`ddim_sample_loop`.
            clip_denoised: as in :meth:`ddim_sample_loop`.
            model_kwargs: as in :meth:`ddim_sample_loop`.
            eta: as in :meth:`ddim_sample_loop`.
            progress: as in :meth:`ddim_sample_loop`.
            generator: as in :meth:`ddim_sample_loop`.
            device: as in :meth:`ddim_sample_loop`.
            denoised_fn: as in :meth:`ddim_sample_loop`.

        Returns:
            An iterator over per-step dicts (``"sample"``, ``"pred_xstart"``).
        """
        from . import loops

        return loops.ddim_sample_loop_progressive(
            self,
            model,
            shape,
            noise,
            clip_denoised,
            model_kwargs,
            eta,
            progress,
            generator,
            device=device,
            denoised_fn=denoised_fn,
        )

    def training_losses(
        self,
        model: Model,
        x_start: Image,
        t: Steps,
        model_kwargs: dict[str, Any] | None = None,
        noise: Image | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> dict[str, Float[Tensor, "b"]]:
        """Per-sample training losses at steps ``t`` (see :func:`~mdtblocks.diffusion.training_losses`).

        Args:
            model: called as ``model(x_t, timestep_map[t], **model_kwargs)``.
            x_start: clean data.
            t: ``(b,)`` steps of this process.
            model_kwargs: extra model arguments; ``{"y": y, "ids_keep": ids}`` gives MDT's masked loss.
            noise: the noise; drawn from ``generator`` when ``None``.
            generator: the source of the noise (``None``: torch's global generator).

        Returns:
            ``(b,)`` tensors ``"loss"``, ``"mse"`` and, when sigma is learned, ``"vb"``.
        """
        from . import losses  # losses.py builds on this class

        return losses.training_losses(self, model, x_start, t, model_kwargs, noise, generator=generator)

    def _vb_terms_bpd(
        self,
        model: Model,
        x_start: Image,
        x_t: Image,
        t: Steps,
        clip_denoised: bool = True,
        model_kwargs: dict[str, Any] | None = None,
    ) -> dict[str, Tensor]:
        """One term of the variational bound in bits per dimension (official name)."""
        from . import losses

        out = self.p_mean_variance(model, x_t, t, clip_denoised=clip_denoised, model_kwargs=model_kwargs)
        return {"output": losses.vb_terms_bpd(self, out, x_start, x_t, t), "pred_xstart": out["pred_xstart"]}

    def _prior_bpd(self, x_start: Image) -> Float[Tensor, "b"]:
        """Prior term of the variational bound in bits per dimension (official name)."""
        from . import bpd

        return bpd.prior_bpd(self, x_start)

    def calc_bpd_loop(
        self,
        model: Model,
        x_start: Image,
        clip_denoised: bool = True,
        model_kwargs: dict[str, Any] | None = None,
        *,
        generator: torch.Generator | None = None,
        progress: bool = False,
    ) -> dict[str, Float[Tensor, "b"] | Float[Tensor, "b T"]]:
        """The whole variational bound of ``x_start`` (see :func:`~mdtblocks.diffusion.calc_bpd_loop`).

        Args:
            model: the denoiser.
            x_start: clean data in ``[-1, 1]``.
            clip_denoised: clamp ``x_0`` estimates to ``[-1, 1]``.
            model_kwargs: extra model arguments.
            generator: source of the noise of each step.
            progress: show a tqdm progress bar.

        Returns:
            ``"total_bpd"``, ``"prior_bpd"`` ``(b,)`` and ``"vb"``, ``"xstart_mse"``, ``"mse"`` ``(b, T)``.
        """
        from . import bpd

        return bpd.calc_bpd_loop(
            self, model, x_start, clip_denoised, model_kwargs, generator=generator, progress=progress
        )
