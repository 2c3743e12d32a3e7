"""Sampling through diffusers schedulers (DPM-Solver++, DDIM, DDPM) with the training process's betas."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from .noise import gaussian_noise
from .process import check_prediction
from .schedules import TRAINING_STEPS, named_betas

__all__ = ["SCHEDULER_KINDS", "make_scheduler", "diffusers_sample_loop", "scheduler_model_output"]

SCHEDULER_KINDS: tuple[str, ...] = ("dpm_solver++", "ddim", "ddpm")
"""Kinds :func:`make_scheduler` builds: ``DPMSolverMultistepScheduler`` (DPM-Solver++, 2nd order),
``DDIMScheduler`` and ``DDPMScheduler`` (learned-range variance when sigma is learned)."""

_DIFFUSERS_PREDICTION = {"epsilon": "epsilon", "x0": "sample", "v": "v_prediction"}
_LEARNED = ("learned", "learned_range")


def make_scheduler(
    kind: str,
    *,
    noise_schedule: str = "linear",
    diffusion_steps: int = TRAINING_STEPS,
    predict: str = "epsilon",
    learn_sigma: bool = True,
    **overrides: Any,
) -> Any:
    """A diffusers scheduler over exactly the betas the model was trained with.

    Latent models are sampled without clipping (``clip_sample=False``). A DDPM scheduler
    reads the learned variance (``variance_type="learned_range"``) when sigma is learned;
    DPM-Solver++ and DDIM use only the prediction half of the output.

    Args:
        kind: one of :data:`SCHEDULER_KINDS`.
        noise_schedule: the training schedule, ``"linear"`` or ``"cosine"``.
        diffusion_steps: training steps ``T``.
        predict: the model's prediction, ``"epsilon"``, ``"x0"`` or ``"v"``.
        learn_sigma: whether the model outputs variance channels.
        **overrides: further scheduler arguments (e.g. ``solver_order=3``).

    Returns:
        The scheduler (call ``set_timesteps`` or use :func:`diffusers_sample_loop`).

    Raises:
        ValueError: for an unknown kind, schedule or prediction.
    """
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

    predict = check_prediction(predict)
    betas = named_betas(noise_schedule, diffusion_steps)
    common: dict[str, Any] = {
        "num_train_timesteps": diffusion_steps,
        "trained_betas": betas.tolist(),
        "prediction_type": _DIFFUSERS_PREDICTION[predict],
    }
    if kind == "dpm_solver++":
        kwargs = {**common, "algorithm_type": "dpmsolver++", "solver_order": 2}
        cls: Any = DPMSolverMultistepScheduler
    elif kind == "ddim":
        # set_alpha_to_one: the last step lands on x_0 exactly, as the official DDIM loop does.
        kwargs = {**common, "clip_sample": False, "set_alpha_to_one": True, "steps_offset": 0}
        cls = DDIMScheduler
    elif kind == "ddpm":
        kwargs = {**common, "clip_sample": False, "variance_type": "learned_range" if learn_sigma else "fixed_large"}
        cls = DDPMScheduler
    else:
        raise ValueError(f"unknown scheduler kind {kind!r}; expected one of {SCHEDULER_KINDS}")
    kwargs.update(overrides)
    return cls(**kwargs)


def _reads_learned_variance(scheduler: Any) -> bool:
    from diffusers import DDPMScheduler

    return isinstance(scheduler, DDPMScheduler) and getattr(scheduler.config, "variance_type", None) in _LEARNED


def scheduler_model_output(
    scheduler: Any, output: Float[Tensor, "b c2 hh ww"], channels: int
) -> Float[Tensor, "b c3 hh ww"]:
    """What to feed ``scheduler.step``: the full output where the scheduler reads a learned
    variance (DDPM with ``learned``/``learned_range``), else only the prediction channels.

    Args:
        scheduler: a diffusers scheduler.
        output: the model output (``channels`` or ``2 * channels`` channels).
        channels: channels of the sample.

    Returns:
        The output, or its first ``channels`` channels.

    Raises:
        ValueError: for an output with another channel count, or a scheduler that would
            cut a learned-sigma output at a fixed channel count (DPM-Solver with ``variance_type``).
    """
    if output.shape[1] not in (channels, 2 * channels):
        raise ValueError(
            f"model output has {output.shape[1]} channels; expected {channels} (prediction) or "
            f"{2 * channels} (prediction and learned sigma) for {channels}-channel samples"
        )
    if _reads_learned_variance(scheduler):
        if output.shape[1] != 2 * channels:
            raise ValueError(
                f"{type(scheduler).__name__} with variance_type={scheduler.config.variance_type!r} needs "
                f"{2 * channels} output channels, got {output.shape[1]}"
            )
        return output
    if getattr(scheduler.config, "variance_type", None) in _LEARNED:
        raise ValueError(
            f"{type(scheduler).__name__} with variance_type={scheduler.config.variance_type!r} would cut the output "
            "itself; build it with variance_type=None and let mdtblocks pass the prediction channels"
        )
    return output[:, :channels]


def diffusers_sample_loop(
    model: Callable[..., Float[Tensor, "b c2 hh ww"]],
    scheduler: Any,
    shape: Sequence[int],
    noise: Float[Tensor, "b c hh ww"] | None = None,
    num_inference_steps: int = 25,
    model_kwargs: dict[str, Any] | None = None,
    progress: bool = False,
    generator: torch.Generator | None = None,
    *,
    device: torch.device | str | None = None,
    **step_kwargs: Any,
) -> Float[Tensor, "b c hh ww"]:
    """Sample with a diffusers scheduler, e.g. 25 DPM-Solver++ steps.

    Args:
        model: the denoiser or a guided model, ``model(x, t, **model_kwargs)`` with ``t``
            the training-process steps the scheduler visits.
        scheduler: a diffusers scheduler (see :func:`make_scheduler`).
        shape: ``(b, c, hh, ww)`` of the samples.
        noise: the initial noise; drawn from ``generator`` when ``None``.
        num_inference_steps: scheduler steps.
        model_kwargs: extra model arguments, e.g. ``{"y": y}``.
        progress: show a tqdm progress bar.
        generator: source of the initial noise and of any step noise.
        device: where to sample when ``noise`` is not given (default: the model's device or CPU).
        **step_kwargs: passed to ``scheduler.step`` (e.g. ``eta`` for DDIM).

    Returns:
        The samples.
    """
    if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int) or num_inference_steps < 1:
        raise ValueError(f"num_inference_steps must be a positive int, got {num_inference_steps!r}")
    if noise is None:
        if device is None:
            params = getattr(model, "parameters", None)
            first = next(iter(params()), None) if callable(params) else None
            device = first.device if first is not None else "cpu"
        noise = gaussian_noise(torch.empty(tuple(shape), device=device), generator)
    elif tuple(noise.shape) != tuple(shape):
        raise ValueError(f"noise has shape {tuple(noise.shape)} but shape is {tuple(shape)}")
    x = noise * scheduler.init_noise_sigma
    scheduler.set_timesteps(num_inference_steps, device=x.device)
    if "generator" in inspect.signature(scheduler.step).parameters:
        step_kwargs.setdefault("generator", generator)
    timesteps = scheduler.timesteps
    if progress:
        from tqdm.auto import tqdm

        timesteps = tqdm(timesteps)
    for t in timesteps:
        t_batch = t.to(device=x.device, dtype=torch.long).expand(x.shape[0])  # no host read of t
        with torch.no_grad():
            out = model(scheduler.scale_model_input(x, t), t_batch, **(model_kwargs or {}))
        out = scheduler_model_output(scheduler, out.to(x.dtype), x.shape[1])
        x = scheduler.step(out, t, x, **step_kwargs).prev_sample
    return x

