"""The reverse step: reading a model output (variance type and prediction) as ``p(x_{t-1} | x_t)``, DDPM and DDIM steps."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from jaxtyping import Float

from ..typing import Image, Tensor, Timesteps
from .noise import gaussian_noise
from .process import VARIANCE_TYPES, GaussianProcess, Model, per_sample, learns_variance, math_dtype

__all__ = [
    "split_model_output",
    "p_mean_variance_from_output",
    "p_mean_variance",
    "p_sample",
    "ddim_sample",
    "ddim_reverse_sample",
]

Denoise = Callable[[Image], Image]


def split_model_output(
    output: Float[Tensor, "b c2 hh ww"], channels: int, variance_type: str
) -> tuple[Image, Image | None]:
    """Split a model output into its ``c``-channel prediction and (when learned) variance channels.

    Args:
        output: the raw model output.
        channels: channels ``c`` of the diffused data.
        variance_type: one of :data:`~mdtblocks.diffusion.VARIANCE_TYPES`.

    Returns:
        The prediction and the variance values, or ``None`` for a fixed variance.

    Raises:
        ValueError: if the output does not have ``2c`` (learned) or ``c`` (fixed) channels.
    """
    learned = learns_variance(variance_type)
    expected = 2 * channels if learned else channels
    if output.ndim < 2 or output.shape[1] != expected:
        got = output.shape[1] if output.ndim >= 2 else None
        allowed = "; ".join(
            f"{name!r} needs {2 * channels if learns_variance(name) else channels}" for name in VARIANCE_TYPES
        )
        raise ValueError(
            f"model output has {got} channels (shape {tuple(output.shape)}) but variance type {variance_type!r} "
            f"needs {expected} for {channels}-channel data ({allowed}); build the diffusion with "
            f"learn_sigma={not learned} or the model with learn_sigma={learned}"
        )
    if not learned:
        return output, None
    return output[:, :channels], output[:, channels:]


def p_mean_variance_from_output(
    diffusion: GaussianProcess,
    model_output: Float[Tensor, "b c2 hh ww"],
    x: Image,
    t: Timesteps,
    clip_denoised: bool = True,
    denoised_fn: Denoise | None = None,
) -> dict[str, Image]:
    """Read a model output at ``x_t`` as ``p(x_{t-1} | x_t)`` and the ``x_0`` estimate.

    Args:
        diffusion: the process (its :attr:`~GaussianProcess.predict` and variance type say how to read).
        model_output: ``c`` (fixed variance) or ``2c`` (learned) channels.
        x: ``x_t``.
        t: ``(b,)`` steps of this process.
        clip_denoised: clamp the ``x_0`` estimate to ``[-1, 1]``.
        denoised_fn: applied to the ``x_0`` estimate before clipping.

    Returns:
        ``"mean"``, ``"variance"``, ``"log_variance"`` and ``"pred_xstart"``, all shaped like
        ``x``, in fp32 (fp64 for fp64 ``x``).
    """
    diffusion.check_timesteps(t, x.shape[0])
    x = x.to(math_dtype(x))
    prediction, var_values = split_model_output(model_output.to(x.dtype), x.shape[1], diffusion.variance_type)
    tab = diffusion.tables_on(t.device)
    if diffusion.variance_type == "learned_range":
        assert var_values is not None
        # Interpolate the log-variance between the posterior's and beta's (Nichol & Dhariwal 2021, Eq. 15).
        frac = (var_values + 1) / 2
        min_log = per_sample(tab.posterior_log_variance_clipped, t, x)
        log_var = frac * per_sample(tab.log_betas, t, x) + (1 - frac) * min_log
        variance = torch.exp(log_var)
    elif diffusion.variance_type == "learned":
        assert var_values is not None
        log_var, variance = var_values, torch.exp(var_values)
    else:
        large = diffusion.variance_type == "fixed_large"
        variance = per_sample(tab.fixed_large_variance if large else tab.posterior_variance, t, x).expand_as(x)
        log_table = tab.fixed_large_log_variance if large else tab.posterior_log_variance_clipped
        log_var = per_sample(log_table, t, x).expand_as(x)

    pred_xstart = diffusion.to_xstart(prediction, x, t)
    if denoised_fn is not None:
        pred_xstart = denoised_fn(pred_xstart)
    if clip_denoised:
        pred_xstart = pred_xstart.clamp(-1, 1)
    mean, _, _ = diffusion.q_posterior_mean_variance(pred_xstart, x, t)
    return {"mean": mean, "variance": variance, "log_variance": log_var, "pred_xstart": pred_xstart}


def p_mean_variance(
    diffusion: GaussianProcess,
    model: Model,
    x: Image,
    t: Timesteps,
    clip_denoised: bool = True,
    denoised_fn: Denoise | None = None,
    model_kwargs: dict[str, Any] | None = None,
) -> dict[str, Image]:
    """Call ``model(x, timestep_map[t], **model_kwargs)`` and read it (:func:`p_mean_variance_from_output`)."""
    diffusion.check_timesteps(t, x.shape[0])
    output = model(x, diffusion.model_timesteps(t), **(model_kwargs or {}))
    return p_mean_variance_from_output(diffusion, output, x, t, clip_denoised, denoised_fn)


def _nonzero(t: Timesteps, like: Image) -> Float[Tensor, "b 1 1 1"]:
    """1 where ``t > 0``, 0 at the last step (which adds no noise)."""
    return (t != 0).to(like.dtype).view(-1, *([1] * (like.ndim - 1)))


def p_sample(
    diffusion: GaussianProcess,
    model: Model,
    x: Image,
    t: Timesteps,
    clip_denoised: bool = True,
    denoised_fn: Denoise | None = None,
    model_kwargs: dict[str, Any] | None = None,
    *,
    generator: torch.Generator | None = None,
    noise: Image | None = None,
) -> dict[str, Image]:
    """One ancestral step ``x_{t-1} ~ p(x_{t-1} | x_t)`` (no noise at ``t = 0``).

    Args:
        diffusion: the process.
        model: the denoiser (see :func:`p_mean_variance`).
        x: ``x_t``.
        t: ``(b,)`` steps.
        clip_denoised: clamp the ``x_0`` estimate to ``[-1, 1]``.
        denoised_fn: applied to the ``x_0`` estimate before clipping.
        model_kwargs: extra model arguments.
        generator: source of the step noise.
        noise: the step noise itself (overrides ``generator``).

    Returns:
        ``"sample"`` (``x_{t-1}``), ``"pred_xstart"`` and the :func:`p_mean_variance` entries.
    """
    out = p_mean_variance(diffusion, model, x, t, clip_denoised, denoised_fn, model_kwargs)
    if noise is None:
        noise = gaussian_noise(out["mean"], generator)
    out["sample"] = out["mean"] + _nonzero(t, out["mean"]) * torch.exp(0.5 * out["log_variance"]) * noise
    return out


def ddim_sample(
    diffusion: GaussianProcess,
    model: Model,
    x: Image,
    t: Timesteps,
    clip_denoised: bool = True,
    denoised_fn: Denoise | None = None,
    model_kwargs: dict[str, Any] | None = None,
    eta: float | int = 0.0,
    *,
    generator: torch.Generator | None = None,
    noise: Image | None = None,
) -> dict[str, Image]:
    """One DDIM step (Song et al. 2021, Eq. 12); ``eta = 0`` is deterministic and draws no noise.

    Args:
        diffusion: the process.
        model: the denoiser (see :func:`p_mean_variance`).
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
    out = p_mean_variance(diffusion, model, x, t, clip_denoised, denoised_fn, model_kwargs)
    x = x.to(out["mean"].dtype)
    # Re-derive epsilon from the (possibly clipped) x_0 estimate, whatever the model predicts.
    eps = diffusion.eps_from_xstart(x, t, out["pred_xstart"])
    tab = diffusion.tables_on(t.device)
    ab, ab_prev = per_sample(tab.alphas_cumprod, t, x), per_sample(tab.alphas_cumprod_prev, t, x)
    sigma = eta * torch.sqrt((1 - ab_prev) / (1 - ab)) * torch.sqrt(1 - ab / ab_prev)
    sample = out["pred_xstart"] * torch.sqrt(ab_prev) + torch.sqrt(1 - ab_prev - sigma**2) * eps
    if eta > 0:
        if noise is None:
            noise = gaussian_noise(x, generator)
        sample = sample + _nonzero(t, x) * sigma * noise
    return {"sample": sample, "pred_xstart": out["pred_xstart"]}


def ddim_reverse_sample(
    diffusion: GaussianProcess,
    model: Model,
    x: Image,
    t: Timesteps,
    clip_denoised: bool = True,
    denoised_fn: Denoise | None = None,
    model_kwargs: dict[str, Any] | None = None,
    eta: float | int = 0.0,
) -> dict[str, Image]:
    """One deterministic DDIM step forward in time, ``x_t -> x_{t+1}`` (encoding); ``eta`` must be 0.

    Returns:
        ``"sample"`` (``x_{t+1}``) and ``"pred_xstart"``.
    """
    if eta != 0.0:
        raise ValueError(f"the reverse DDIM ODE is deterministic; eta must be 0, got {eta}")
    out = p_mean_variance(diffusion, model, x, t, clip_denoised, denoised_fn, model_kwargs)
    x = x.to(out["mean"].dtype)
    eps = diffusion.eps_from_xstart(x, t, out["pred_xstart"])
    ab_next = per_sample(diffusion.tables_on(t.device).alphas_cumprod_next, t, x)
    sample = out["pred_xstart"] * torch.sqrt(ab_next) + torch.sqrt(1 - ab_next) * eps
    return {"sample": sample, "pred_xstart": out["pred_xstart"]}
