"""Training losses of a Gaussian diffusion: the (weighted) mse of the prediction and the vb term."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float

from ..typing import Image, Tensor, Timesteps
from .likelihood import discretized_gaussian_log_likelihood, mean_flat, normal_kl
from .noise import gaussian_noise
from .process import GaussianProcess, Model, fp32_math, math_dtype
from .reverse import p_mean_variance_from_output, split_model_output

__all__ = [
    "training_losses", "losses_from_output", "vb_terms_bpd", "ElementLosses", "element_losses_from_output",
    "element_training_losses", "vb_terms_per_element",
]


def _vb_maps(
    diffusion: GaussianProcess, p_out: dict[str, Image], x_start: Image, x_t: Image, t: Timesteps
) -> tuple[Image, Image]:
    """Per element, in nats: ``KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t))`` and the decoder NLL ``-log p(x_0 | x_1)``."""
    true_mean, _, true_log_var = diffusion.q_posterior_mean_variance(x_start, x_t, t)
    kl = normal_kl(true_mean, true_log_var, p_out["mean"], p_out["log_variance"])
    nll = -discretized_gaussian_log_likelihood(x_start, means=p_out["mean"], log_scales=0.5 * p_out["log_variance"])
    return kl, nll


def _identity(x: Image) -> Image:
    return x


def _vb(
    diffusion: GaussianProcess, p_out: dict[str, Image], x_start: Image, x_t: Image, t: Timesteps,
    reduce: Callable[[Image], Tensor],
) -> Tensor:
    """The vb term in bits, ``reduce`` applied to the KL and NLL maps before the choice by ``t`` (the two public forms)."""
    kl, nll = (reduce(m) for m in _vb_maps(diffusion, p_out, x_start, x_t, t))
    return torch.where((t == 0).view(-1, *([1] * (kl.ndim - 1))), nll, kl) / math.log(2.0)


def vb_terms_bpd(
    diffusion: GaussianProcess, p_out: dict[str, Image], x_start: Image, x_t: Image, t: Timesteps
) -> Float[Tensor, "b"]:
    """One term of the variational bound, in bits per dimension, per sample.

    ``KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t))`` for ``t > 0`` and the discretised
    decoder NLL ``-log p(x_0 | x_1)`` at ``t = 0`` (Ho et al. 2020, Eq. 5).

    Args:
        diffusion: the process.
        p_out: the model's reverse step, from :func:`~mdtblocks.diffusion.reverse.p_mean_variance`:
            ``(b, c, hh, ww)`` entries, of which ``"mean"`` and ``"log_variance"`` are read.
        x_start: clean data.
        x_t: noised data.
        t: ``(b,)`` steps.

    Returns:
        ``(b,)`` bits per dimension.
    """
    return _vb(diffusion, p_out, x_start, x_t, t, mean_flat)


def vb_terms_per_element(
    diffusion: GaussianProcess, p_out: dict[str, Image], x_start: Image, x_t: Image, t: Timesteps
) -> Image:
    """:func:`vb_terms_bpd` before its mean over elements: bits per element, ``(b, c, hh, ww)``.

    Each element's term is its own Gaussian's KL (or, at ``t = 0``, its discretised NLL),
    so the mean of these over any set of elements is the bound's term on that set alone.
    """
    return _vb(diffusion, p_out, x_start, x_t, t, _identity)


def _terms(
    diffusion: GaussianProcess,
    model_output: Float[Tensor, "b c2 hh ww"],
    x_start: Image,
    x_t: Image,
    t: Timesteps,
    noise: Image,
    reduce: Callable[[Image], Tensor],
) -> tuple[dict[str, Tensor], Image, Image]:
    """``(terms, x_t, prediction)`` in the math dtype: ``"vb"`` and ``"mse"`` with ``reduce`` applied to each element map.

    ``reduce`` is :func:`mean_flat` (per sample) or the identity (per element); the
    weighting and rescaling come after it, so the per-sample terms are computed as they
    always were, and each per-element term's mean over the elements is the per-sample one.
    """
    dtype = math_dtype(x_start)
    with fp32_math(x_start.device):
        model_output = model_output.to(dtype)
        x_start, x_t, noise = x_start.to(dtype), x_t.to(dtype), noise.to(dtype)
        prediction, var_values = split_model_output(model_output, x_start.shape[1], diffusion.variance_type)
        terms: dict[str, Tensor] = {}
        if diffusion.loss_type in ("kl", "rescaled_kl"):
            out = p_mean_variance_from_output(diffusion, model_output, x_t, t, clip_denoised=False)
            vb = _vb(diffusion, out, x_start, x_t, t, reduce)
            terms["vb"] = vb * diffusion.num_timesteps if diffusion.loss_type == "rescaled_kl" else vb
            return terms, x_t, prediction
        if var_values is not None:
            # The vb term trains the variance only: the mean it sees is detached (Nichol & Dhariwal 2021, Sec. 3.1).
            frozen = torch.cat([prediction.detach(), var_values], dim=1)
            out = p_mean_variance_from_output(diffusion, frozen, x_t, t, clip_denoised=False)
            vb = _vb(diffusion, out, x_start, x_t, t, reduce)
            # rescaled_mse: scaled by T / 1000 so that the vb term does not swamp the mse term (improved DDPM).
            terms["vb"] = vb * (diffusion.num_timesteps / 1000.0) if diffusion.loss_type == "rescaled_mse" else vb
        mse = reduce((diffusion.target(x_start, t, noise) - prediction) ** 2)
        if diffusion.snr_gamma is not None:
            mse = diffusion.mse_weight(t).to(dtype).view(-1, *([1] * (mse.ndim - 1))) * mse
        terms["mse"] = mse
        return terms, x_t, prediction


def losses_from_output(
    diffusion: GaussianProcess,
    model_output: Float[Tensor, "b c2 hh ww"],
    x_start: Image,
    x_t: Image,
    t: Timesteps,
    noise: Image,
) -> dict[str, Float[Tensor, "b"]]:
    """Per-sample losses for a model output already computed at ``x_t = q_sample(x_start, t, noise)``.

    Args:
        diffusion: the process (prediction type, variance type, loss type, weighting).
        model_output: the raw model output (``c`` or ``2c`` channels).
        x_start: clean data.
        x_t: noised data.
        t: ``(b,)`` steps.
        noise: the noise that made ``x_t``.

    Returns:
        ``"loss"``, ``"mse"`` (mse losses) and ``"vb"`` (learned sigma), each ``(b,)``.
    """
    terms, _, _ = _terms(diffusion, model_output, x_start, x_t, t, noise, mean_flat)
    if "mse" not in terms:  # the KL loss types: the bound alone
        return {"loss": terms["vb"]}
    terms["loss"] = terms["mse"] + terms["vb"] if "vb" in terms else terms["mse"]
    return terms


@dataclass(frozen=True)
class ElementLosses:
    """A Gaussian pass's loss terms per element, before the mean over elements.

    Attributes:
        terms: ``"mse"`` (min-SNR weighted when the process is) and, with learned sigma,
            ``"vb"`` (bits per element, rescaled as the loss type says); the KL loss types
            have ``"vb"`` alone. Each ``(b, c, hh, ww)``; ``"loss"`` is their sum.
        x_t: the noisy input the model was given.
        prediction: the model's prediction channels (variance channels left out).
    """

    terms: dict[str, Image]
    x_t: Image
    prediction: Image


def element_losses_from_output(
    diffusion: GaussianProcess,
    model_output: Float[Tensor, "b c2 hh ww"],
    x_start: Image,
    x_t: Image,
    t: Timesteps,
    noise: Image,
) -> ElementLosses:
    """:func:`losses_from_output` per element: each term's mean over all elements is that function's term.

    With dropped tokens (MaskDiT's rule) the terms are averaged over the visible patches
    only; the vb term is then the bound's terms of the visible elements, averaged (each
    element's KL involves only its own mean and variance).
    """
    terms, x_t, prediction = _terms(diffusion, model_output, x_start, x_t, t, noise, _identity)
    return ElementLosses({k: terms[k] for k in ("mse", "vb") if k in terms}, x_t, prediction)


def _noised_pass(
    diffusion: GaussianProcess,
    model: Model,
    x_start: Image,
    t: Timesteps,
    model_kwargs: dict[str, Any] | None,
    noise: Image | None,
    generator: torch.Generator | None,
) -> tuple[Image, Image, Image, Float[Tensor, "b c2 hh ww"]]:
    """``(x_start, x_t, noise, model output)``, the first three in the math dtype: noise ``x_start`` to ``t``, run the model."""
    if not isinstance(x_start, Tensor) or not x_start.is_floating_point():
        raise TypeError(f"x_start must be a floating-point tensor, got {getattr(x_start, 'dtype', type(x_start))}")
    diffusion.check_timesteps(t, x_start.shape[0])
    with fp32_math(x_start.device):
        x_start32 = x_start.to(math_dtype(x_start))
        if noise is None:
            noise = gaussian_noise(x_start32, generator)
        x_t = diffusion.q_sample(x_start32, t, noise.to(x_start32.dtype))
    model_output = model(x_t, diffusion.model_timesteps(t), **(model_kwargs or {}))
    return x_start32, x_t, noise, model_output


def element_training_losses(
    diffusion: GaussianProcess,
    model: Model,
    x_start: Image,
    t: Timesteps,
    model_kwargs: dict[str, Any] | None = None,
    noise: Image | None = None,
    *,
    generator: torch.Generator | None = None,
) -> ElementLosses:
    """:func:`training_losses` with the terms per element (:func:`element_losses_from_output`)."""
    x_start, x_t, noise, model_output = _noised_pass(diffusion, model, x_start, t, model_kwargs, noise, generator)
    return element_losses_from_output(diffusion, model_output, x_start, x_t, t, noise)


def training_losses(
    diffusion: GaussianProcess,
    model: Model,
    x_start: Image,
    t: Timesteps,
    model_kwargs: dict[str, Any] | None = None,
    noise: Image | None = None,
    *,
    generator: torch.Generator | None = None,
) -> dict[str, Float[Tensor, "b"]]:
    """Noise ``x_start`` to steps ``t``, run the model, and return per-sample losses.

    The model runs under whatever autocast the caller set; the diffusion math runs
    in fp32 (fp64 for fp64 inputs). Nothing here reads tensor values on the host
    for accelerator tensors, so the step has no host sync.

    Args:
        diffusion: the process.
        model: called as ``model(x_t, timestep_map[t], **model_kwargs)``.
        x_start: clean data ``(b, c, hh, ww)``.
        t: ``(b,)`` steps of the process.
        model_kwargs: extra model arguments; ``{"y": y, "ids_keep": ids}`` gives MDT's masked loss.
        noise: the noise; drawn from ``generator`` when ``None``.
        generator: the source of the noise (``None``: torch's global generator).

    Returns:
        ``"loss"``, ``"mse"`` and, when sigma is learned, ``"vb"``: ``(b,)`` tensors.
    """
    x_start, x_t, noise, model_output = _noised_pass(diffusion, model, x_start, t, model_kwargs, noise, generator)
    return losses_from_output(diffusion, model_output, x_start, x_t, t, noise)
