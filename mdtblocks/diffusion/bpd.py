"""The full variational bound in bits per dimension: every step's term plus the prior term."""

from __future__ import annotations

import math
from typing import Any

import torch
from jaxtyping import Float

from ..typing import Image, Tensor
from .likelihood import mean_flat, normal_kl
from .losses import vb_terms_bpd
from .noise import gaussian_noise
from .process import GaussianProcess, Model
from .reverse import p_mean_variance

__all__ = ["prior_bpd", "calc_bpd_loop"]


def prior_bpd(diffusion: GaussianProcess, x_start: Image) -> Float[Tensor, "b"]:
    """``KL(q(x_T | x_0) || N(0, I))`` in bits per dimension; it does not depend on the model.

    Args:
        diffusion: the process.
        x_start: clean data.

    Returns:
        ``(b,)`` bits per dimension.
    """
    t = torch.full((x_start.shape[0],), diffusion.num_timesteps - 1, device=x_start.device, dtype=torch.long)
    mean, _, log_var = diffusion.q_mean_variance(x_start, t)
    zero = torch.zeros_like(mean)
    return mean_flat(normal_kl(mean, log_var, zero, zero)) / math.log(2.0)


def calc_bpd_loop(
    diffusion: GaussianProcess,
    model: Model,
    x_start: Image,
    clip_denoised: bool = True,
    model_kwargs: dict[str, Any] | None = None,
    *,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> dict[str, Float[Tensor, "b"] | Float[Tensor, "b T"]]:
    """Evaluate the whole variational bound of ``x_start``, one model call per step.

    Args:
        diffusion: the process (its every step is visited, from ``T - 1`` down to 0).
        model: the denoiser, ``model(x_t, timestep_map[t], **model_kwargs)``.
        x_start: clean data in ``[-1, 1]``.
        clip_denoised: clamp ``x_0`` estimates to ``[-1, 1]``.
        model_kwargs: extra model arguments.
        generator: source of the noise of each step.
        progress: show a tqdm progress bar.

    Returns:
        ``"total_bpd"`` and ``"prior_bpd"`` ``(b,)``; ``"vb"``, ``"xstart_mse"`` and ``"mse"``
        ``(b, T)`` in the official column order: column ``i`` holds step ``T - 1 - i``
        (the order the loop visits them).
    """
    b = x_start.shape[0]
    vb, xstart_mse, mse = [], [], []
    steps: Any = range(diffusion.num_timesteps - 1, -1, -1)
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, total=diffusion.num_timesteps)
    for i in steps:
        t = torch.full((b,), i, device=x_start.device, dtype=torch.long)
        noise = gaussian_noise(x_start, generator)
        x_t = diffusion.q_sample(x_start, t, noise)
        with torch.no_grad():
            out = p_mean_variance(diffusion, model, x_t, t, clip_denoised, model_kwargs=model_kwargs)
            vb.append(vb_terms_bpd(diffusion, out, x_start, x_t, t))
        xstart_mse.append(mean_flat((out["pred_xstart"] - x_start) ** 2))
        eps = diffusion.eps_from_xstart(x_t, t, out["pred_xstart"])
        mse.append(mean_flat((eps - noise) ** 2))
    vb_t, xstart_t, mse_t = (torch.stack(v, dim=1) for v in (vb, xstart_mse, mse))
    prior = prior_bpd(diffusion, x_start)
    return {"total_bpd": vb_t.sum(dim=1) + prior, "prior_bpd": prior, "vb": vb_t, "xstart_mse": xstart_t, "mse": mse_t}
