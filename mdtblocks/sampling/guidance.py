"""Classifier-free guidance as a wrapper around the model: constant (DiT) or power-cosine (MDT) scale."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from jaxtyping import Float, Int, Shaped
from torch import Tensor, nn

from ..diffusion.schedules import TRAINING_STEPS

__all__ = ["ClassifierFreeGuidance", "classifier_free_guidance", "power_cosine_scale", "power_cosine_of_fraction", "guide"]

DataFraction = Callable[[Shaped[Tensor, "b"]], Float[Tensor, "b"]]
"""An objective's ``data_fraction``: its time -> ``[0, 1]``, 0 at pure noise and 1 at clean data."""


def power_cosine_scale(
    t: Shaped[Tensor, "b"], cfg_scale: float | int, scale_pow: float | int, diffusion_steps: int = TRAINING_STEPS
) -> Float[Tensor, "b"]:
    """MDT's guidance schedule: ``1 + (cfg_scale - 1) (1 - cos(pi (1 - t / T)^scale_pow)) / 2``.

    The scale rises from 1 at ``t = T`` (pure noise) to ``cfg_scale`` at ``t = 0``; a
    larger ``scale_pow`` keeps it near 1 for longer (Gao et al. 2023, MDTv2 sampling).

    Args:
        t: ``(b,)`` timesteps of the original ``diffusion_steps``-step process.
        cfg_scale: the guidance scale reached at ``t = 0``.
        scale_pow: the power ``p`` (MDT: 4).
        diffusion_steps: steps ``T`` of the original process.

    Returns:
        ``(b,)`` float32 guidance scales.
    """
    return power_cosine_of_fraction(1.0 - t.float() / diffusion_steps, cfg_scale, scale_pow)


def power_cosine_of_fraction(
    fraction: Float[Tensor, "b"], cfg_scale: float | int, scale_pow: float | int
) -> Float[Tensor, "b"]:
    """MDT's power-cosine schedule as a function of the data fraction ``f`` (1 - t/T for the Gaussian diffusion).

    ``1 + (cfg_scale - 1) (1 - cos(pi f^scale_pow)) / 2``: 1 at pure noise (``f = 0``), ``cfg_scale`` at data.
    """
    return (cfg_scale - 1.0) * (1.0 - torch.cos(fraction.pow(scale_pow) * math.pi)) / 2.0 + 1.0


class ClassifierFreeGuidance(nn.Module):
    """A model with classifier-free guidance: call it with the stacked batch ``[cond; uncond]``.

    The first half of ``x`` is fed twice, with the conditional labels (first half of
    ``y``) and the null labels (second half); the guided output
    ``uncond + s (cond - uncond)`` is returned for both halves, so a sampler can keep
    the two halves in lockstep (the official ``forward_with_cfg``). Only the first
    ``guided_channels`` output channels are guided; the others (the rest of the
    prediction and the variance channels) pass through from each half's own pass.

    Args:
        model: the denoiser, ``model(x, t, y, **kwargs)``.
        cfg_scale: the guidance scale ``s`` (1 turns guidance off).
        scale_pow: ``None`` for a constant scale (DiT), else MDT's power-cosine schedule
            (:func:`power_cosine_scale`) with this power.
        guided_channels: output channels to guide (at most all of them); ``None`` guides
            all channels of the prediction (the input's channel count). The official
            checkpoints were evaluated with 3.
        diffusion_steps: steps of the original process (for the schedule, when no ``data_fraction``).
        data_fraction: the objective's time -> ``[0, 1]`` (its ``data_fraction``); the schedule
            is then a function of it, whatever the objective's time. ``None``: ``1 - t / diffusion_steps``.
    """

    def __init__(
        self,
        model: Callable[..., Float[Tensor, "b c2 hh ww"]],
        cfg_scale: float | int,
        *,
        scale_pow: float | int | None = None,
        guided_channels: int | None = None,
        diffusion_steps: int = TRAINING_STEPS,
        data_fraction: DataFraction | None = None,
    ) -> None:
        super().__init__()
        if isinstance(cfg_scale, bool) or not isinstance(cfg_scale, (int, float)) or not math.isfinite(cfg_scale):
            raise ValueError(f"cfg_scale must be a finite number, got {cfg_scale!r}")
        if scale_pow is not None and (not isinstance(scale_pow, (int, float)) or not scale_pow > 0):
            raise ValueError(f"scale_pow must be a positive number or None (constant scale), got {scale_pow!r}")
        if guided_channels is not None and (
            isinstance(guided_channels, bool) or not isinstance(guided_channels, int) or guided_channels < 1
        ):
            raise ValueError(f"guided_channels must be a positive int or None (all channels), got {guided_channels!r}")
        if isinstance(diffusion_steps, bool) or not isinstance(diffusion_steps, int) or diffusion_steps < 1:
            raise ValueError(f"diffusion_steps must be a positive int, got {diffusion_steps!r}")
        self.model = model
        self.cfg_scale = float(cfg_scale)
        self.scale_pow = None if scale_pow is None else float(scale_pow)
        self.guided_channels = guided_channels
        self.diffusion_steps = diffusion_steps
        self.data_fraction = data_fraction

    def extra_repr(self) -> str:
        """The guidance settings, shown in the module's ``repr``."""
        return (
            f"cfg_scale={self.cfg_scale}, scale_pow={self.scale_pow}, guided_channels={self.guided_channels}, "
            f"diffusion_steps={self.diffusion_steps}"
        )

    def scale(self, t: Shaped[Tensor, "b"]) -> Float[Tensor, "b"]:
        """Guidance scale at each timestep.

        Args:
            t: ``(b,)`` timesteps of the original process.

        Returns:
            ``(b,)`` float32 scales: constant, or the power-cosine schedule.
        """
        if self.scale_pow is None:
            return torch.full(t.shape, self.cfg_scale, device=t.device)
        if self.data_fraction is not None:
            return power_cosine_of_fraction(self.data_fraction(t).float(), self.cfg_scale, self.scale_pow)
        return power_cosine_scale(t, self.cfg_scale, self.scale_pow, self.diffusion_steps)

    def forward(
        self, x: Float[Tensor, "b2 c hh ww"], t: Shaped[Tensor, "b2"], y: Int[Tensor, "b2"], **kwargs: Any
    ) -> Float[Tensor, "b2 c2 hh ww"]:
        """Guided model output for the stacked batch ``[cond; uncond]``.

        Args:
            x: ``(2b, c, hh, ww)``; only the first half is used (both halves are equal in a
                guided sampling loop).
            t: ``(2b,)`` timesteps.
            y: ``(2b,)`` labels: ``b`` conditional labels, then ``b`` null labels.
            **kwargs: passed to the model.

        Returns:
            ``(2b, c_out, hh, ww)``: the guided output, repeated for both halves.
        """
        n = x.shape[0]
        if n % 2:
            raise ValueError(f"guidance needs the stacked batch [cond; uncond] of even size, got batch {n}")
        half = x[: n // 2]
        out = self.model(torch.cat([half, half]), t, y, **kwargs)
        # Like the official slice model_out[:, :3], a count above the output's channels guides them all.
        k = x.shape[1] if self.guided_channels is None else min(self.guided_channels, out.shape[1])
        guided, rest = out[:, :k], out[:, k:]
        cond, uncond = guided.chunk(2)
        scale = self.scale(t[: n // 2]).to(out.dtype).view(-1, *([1] * (out.ndim - 1)))
        mixed = uncond + scale * (cond - uncond)
        return torch.cat([torch.cat([mixed, mixed]), rest], dim=1)


def classifier_free_guidance(
    model: Callable[..., Float[Tensor, "b c2 hh ww"]],
    cfg_scale: float | int,
    *,
    scale_pow: float | int | None = None,
    guided_channels: int | None = None,
    diffusion_steps: int = TRAINING_STEPS,
    data_fraction: DataFraction | None = None,
) -> ClassifierFreeGuidance:
    """Wrap ``model`` with classifier-free guidance for sampling (see :class:`ClassifierFreeGuidance`).

    Args:
        model: the denoiser.
        cfg_scale: the guidance scale.
        scale_pow: ``None`` for a constant scale (DiT); MDT uses the power-cosine schedule with 4.
        guided_channels: channels to guide (``None``: all; 3 reproduces the official evaluation).
        diffusion_steps: steps of the original process.
        data_fraction: the objective's ``data_fraction``; the schedule then follows it
            instead of ``1 - t / diffusion_steps``.

    Returns:
        A callable with the model's signature ``(x, t, y)`` for the stacked batch ``[cond; uncond]``.
    """
    return ClassifierFreeGuidance(
        model, cfg_scale, scale_pow=scale_pow, guided_channels=guided_channels, diffusion_steps=diffusion_steps,
        data_fraction=data_fraction,
    )


def guide(
    model: Callable[..., Float[Tensor, "b c2 hh ww"]],
    noise: Float[Tensor, "b c hh ww"],
    labels: Int[Tensor, "b"],
    null_class: int,
    cfg_scale: float | int,
    *,
    scale_pow: float | int | None = None,
    guided_channels: int | None = None,
    data_fraction: DataFraction | None = None,
    diffusion_steps: int = TRAINING_STEPS,
    interval: tuple[float, float] | None = None,
) -> tuple[Callable[..., Tensor], Float[Tensor, "b2 c hh ww"], Int[Tensor, "b2"]]:
    """The one place a sampling loop's batch is set up for guidance: ``(net, noise, labels)`` to integrate.

    With ``cfg_scale == 1`` they are ``model``, ``noise`` and ``labels`` unchanged; otherwise
    the batch is stacked as ``[cond; uncond]`` (``null_class`` for the second half) and
    ``net`` is the :class:`ClassifierFreeGuidance` wrapper; keep the first ``b`` rows of
    the result. ``interval=(lo, hi)`` guides only where the data fraction lies in ``[lo, hi]``
    (a constant scale there; :class:`~mdtblocks.objectives.flow.FlowGuidance` on the
    fraction); it needs ``data_fraction`` and excludes ``scale_pow``.
    """
    if cfg_scale == 1.0:
        return model, noise, labels
    if interval is not None:
        from ..objectives.flow.guidance import FlowGuidance  # the interval schedule lives with the flow objective

        if scale_pow is not None or data_fraction is None:
            raise ValueError("a guidance interval is a constant scale on the data fraction: give data_fraction, not scale_pow")
        net = FlowGuidance(model, cfg_scale, interval=interval, guided_channels=guided_channels, data_fraction=data_fraction)
        return net, torch.cat([noise, noise]), torch.cat([labels, torch.full_like(labels, null_class)])
    net = ClassifierFreeGuidance(
        model, cfg_scale, scale_pow=scale_pow, guided_channels=guided_channels, diffusion_steps=diffusion_steps,
        data_fraction=data_fraction,
    )
    return net, torch.cat([noise, noise]), torch.cat([labels, torch.full_like(labels, null_class)])
