"""Sampling loops over a process's steps: DDPM ancestral and DDIM, with a generator and a progress bar."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from .gaussian import GaussianDiffusion
from .noise import gaussian_noise

__all__ = ["p_sample_loop", "p_sample_loop_progressive", "ddim_sample_loop", "ddim_sample_loop_progressive"]

Image = Float[Tensor, "b c hh ww"]
Model = Callable[..., Float[Tensor, "b c2 hh ww"]]


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


def _steps(diffusion: GaussianDiffusion, progress: bool) -> Iterable[int]:
    steps: Iterable[int] = range(diffusion.num_timesteps - 1, -1, -1)
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, total=diffusion.num_timesteps)
    return steps


def p_sample_loop_progressive(
    diffusion: GaussianDiffusion,
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
    """Yield the output of every ancestral step, from ``t = T - 1`` down to ``0``.

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

    Yields:
        :meth:`GaussianDiffusion.p_sample` outputs (``"sample"``, ``"pred_xstart"``, ...).
    """
    x = _start(model, shape, noise, generator, device)
    for i in _steps(diffusion, progress):
        t = torch.full((x.shape[0],), i, device=x.device, dtype=torch.long)
        with torch.no_grad():
            out = diffusion.p_sample(model, x, t, clip_denoised, denoised_fn, model_kwargs, generator=generator)
        yield out
        x = out["sample"]


def p_sample_loop(
    diffusion: GaussianDiffusion,
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
    """DDPM ancestral sampling (Ho et al. 2020, Alg. 2) over every step of ``diffusion``.

    Args:
        diffusion: the (respaced) process.
        model: the denoiser or a guided model.
        shape: ``(b, c, hh, ww)`` of the samples.
        noise: the initial ``x_T``; drawn from ``generator`` when ``None``.
        clip_denoised: clamp ``x_0`` estimates to ``[-1, 1]``.
        model_kwargs: extra model arguments.
        progress: show a tqdm progress bar.
        generator: source of all noise.
        device: where to sample when ``noise`` is not given.
        denoised_fn: applied to each ``x_0`` estimate before clipping.

    Returns:
        The samples ``x_0``.
    """
    final = None
    for out in p_sample_loop_progressive(
        diffusion,
        model,
        shape,
        noise,
        clip_denoised,
        model_kwargs,
        progress,
        generator,
        device=device,
        denoised_fn=denoised_fn,
    ):
        final = out
    assert final is not None
    return final["sample"]


def ddim_sample_loop_progressive(
    diffusion: GaussianDiffusion,
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
    """Yield the output of every DDIM step, from ``t = T - 1`` down to ``0``.

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

    Yields:
        :meth:`GaussianDiffusion.ddim_sample` outputs (``"sample"``, ``"pred_xstart"``).
    """
    x = _start(model, shape, noise, generator, device)
    for i in _steps(diffusion, progress):
        t = torch.full((x.shape[0],), i, device=x.device, dtype=torch.long)
        with torch.no_grad():
            out = diffusion.ddim_sample(model, x, t, clip_denoised, denoised_fn, model_kwargs, eta, generator=generator)
        yield out
        x = out["sample"]


def ddim_sample_loop(
    diffusion: GaussianDiffusion,
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
        generator: source of all noise.
        device: where to sample when ``noise`` is not given.
        denoised_fn: applied to each ``x_0`` estimate before clipping.

    Returns:
        The samples ``x_0``.
    """
    final = None
    for out in ddim_sample_loop_progressive(
        diffusion,
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
    ):
        final = out
    assert final is not None
    return final["sample"]
