"""Sampling loops over a process's steps, DDPM ancestral and DDIM: one signature, a per-step callback."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

from ..typing import Image, Tensor, Timesteps
from .noise import gaussian_noise
from .process import GaussianProcess, Model
from .reverse import ddim_sample, p_sample

__all__ = ["p_sample_loop", "ddim_sample_loop", "Callback"]

Callback = Callable[[dict[str, Image]], None]
"""Called after every step with that step's output (``"sample"``, ``"pred_xstart"``, ...)."""


def _start(
    model: Model,
    shape: Sequence[int],
    noise: Tensor | None,
    generator: torch.Generator | None,
    device: torch.device | str | None,
) -> Tensor:
    if not isinstance(shape, (tuple, list, torch.Size)) or len(shape) < 2:
        raise ValueError(f"shape must be a tuple (b, c, ...), got {shape!r}")
    if noise is not None:
        if tuple(noise.shape) != tuple(shape):
            raise ValueError(f"noise has shape {tuple(noise.shape)} but shape is {tuple(shape)}")
        return noise if device is None else noise.to(device)
    if device is None:
        params = getattr(model, "parameters", None)
        first = next(iter(params()), None) if callable(params) else None
        device = first.device if first is not None else (generator.device if generator is not None else "cpu")
    return gaussian_noise(torch.empty(tuple(shape), device=device), generator)


def _run(
    diffusion: GaussianProcess,
    step: Callable[[Image, Timesteps], dict[str, Image]],
    x: Image,
    progress: bool,
    callback: Callback | None,
) -> Image:
    """Apply ``step`` from ``t = T - 1`` down to ``0``, reporting each output to ``callback``."""
    steps: Iterable[int] = range(diffusion.num_timesteps - 1, -1, -1)
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, total=diffusion.num_timesteps)
    for i in steps:
        t = torch.full((x.shape[0],), i, device=x.device, dtype=torch.long)
        with torch.no_grad():
            out = step(x, t)
        if callback is not None:
            callback(out)
        x = out["sample"]
    return x


def p_sample_loop(
    diffusion: GaussianProcess,
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
    callback: Callback | None = None,
) -> Image:
    """DDPM ancestral sampling (Ho et al. 2020, Alg. 2) over every step of ``diffusion``.

    Args:
        diffusion: the (respaced) process; ``"250"`` respacing gives the papers' protocol.
        model: the denoiser, or a guided model from :func:`mdtblocks.classifier_free_guidance`.
        shape: ``(b, c, hh, ww)`` of the samples.
        noise: the initial ``x_T``; drawn from ``generator`` when ``None``.
        clip_denoised: clamp ``x_0`` estimates to ``[-1, 1]`` (``False`` for latents).
        model_kwargs: extra model arguments, e.g. ``{"y": y}``.
        progress: show a tqdm progress bar.
        generator: source of the initial and per-step noise.
        device: where to sample when ``noise`` is not given (default: the model's device).
        denoised_fn: applied to each ``x_0`` estimate before clipping.
        callback: called with every step's :func:`~mdtblocks.diffusion.reverse.p_sample` output.

    Returns:
        The samples ``x_0``.
    """
    x = _start(model, shape, noise, generator, device)

    def step(x: Image, t: Timesteps) -> dict[str, Image]:
        return p_sample(diffusion, model, x, t, clip_denoised, denoised_fn, model_kwargs, generator=generator)

    return _run(diffusion, step, x, progress, callback)


def ddim_sample_loop(
    diffusion: GaussianProcess,
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
    callback: Callback | None = None,
) -> Image:
    """DDIM sampling (Song et al. 2021) over every step of ``diffusion``.

    Args:
        diffusion: the (respaced) process, e.g. ``"ddim50"``.
        model: the denoiser or a guided model.
        shape: ``(b, c, hh, ww)`` of the samples.
        noise: the initial ``x_T``; drawn from ``generator`` when ``None``.
        clip_denoised: clamp ``x_0`` estimates to ``[-1, 1]``.
        model_kwargs: extra model arguments.
        eta: DDIM stochasticity; 0 is deterministic.
        progress: show a tqdm progress bar.
        generator: source of the initial noise and, for ``eta > 0``, the step noise.
        device: where to sample when ``noise`` is not given.
        denoised_fn: applied to each ``x_0`` estimate before clipping.
        callback: called with every step's :func:`~mdtblocks.diffusion.reverse.ddim_sample` output.

    Returns:
        The samples ``x_0``.
    """
    x = _start(model, shape, noise, generator, device)

    def step(x: Image, t: Timesteps) -> dict[str, Image]:
        return ddim_sample(diffusion, model, x, t, clip_denoised, denoised_fn, model_kwargs, eta, generator=generator)

    return _run(diffusion, step, x, progress, callback)
