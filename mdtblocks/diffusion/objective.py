"""MDT's training objective: the diffusion loss of the full input plus that of a masked pass, for given randomness."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Bool, Int, Shaped
from torch import nn

from ..masking import MaskPlan
from ..typing import Image, Labels, Tensor
from .gaussian import GaussianDiffusion
from .losses import training_losses
from .noise import gaussian_noise
from .process import fp32_math, math_dtype

__all__ = ["MaskedDiffusionObjective", "StepRandomness"]


@dataclass(frozen=True)
class StepRandomness:
    """Every random draw of one training step, for a batch of ``b`` samples.

    Attributes:
        t: ``(b,)`` diffusion timesteps, uniform in ``[0, num_timesteps)``.
        noise: ``(b, c, hh, ww)`` standard normal noise.
        drop_label: ``(b,)`` True where the label becomes ``null_class`` (classifier-free guidance).
        mask: the mask plan of the masked pass, or ``None`` for models without masking.
        null_class: the label a dropped label becomes (the model's ``num_classes``).
        masked_noise: ``(b, c, hh, ww)`` the masked pass's own noise, for the objective's
            ``masked_draws="independent"`` (the default); ``None`` for ``"shared"``.
        masked_drop_label: ``(b,)`` the masked pass's own label drops; as ``masked_noise``.
    """

    t: Int[Tensor, "b"]
    noise: Image
    drop_label: Bool[Tensor, "b"]
    mask: MaskPlan | None
    null_class: int
    masked_noise: Image | None = None
    masked_drop_label: Bool[Tensor, "b"] | None = None

    def rows(self, index: slice | Int[Tensor, "r"]) -> StepRandomness:
        """The draws of the samples at batch positions ``index``.

        A slice selects views and costs nothing; an index tensor gathers, and one on the host
        is first copied to the draws' device (on a GPU, a host-device sync).
        """
        mask = self.mask
        if mask is not None:
            mask = MaskPlan(ids_keep=mask.ids_keep[index], ids_restore=mask.ids_restore[index], mask=mask.mask[index])
        return StepRandomness(
            self.t[index], self.noise[index], self.drop_label[index], mask, self.null_class,
            None if self.masked_noise is None else self.masked_noise[index],
            None if self.masked_drop_label is None else self.masked_drop_label[index],
        )


@dataclass(frozen=True)
class MaskedDiffusionObjective:
    """The MDT / MDTv2 loss: ``loss(x_t) + masked_weight * loss(x_t with masked tokens)``.

    Both passes share the timestep, the clean latents and the labels before dropout. With
    ``masked_draws="independent"`` (the default) the masked pass has its own noise and its
    own label drops, as in the official MDT and MDTv2 trainers (they call the loss twice
    and each call draws afresh); with ``"shared"`` it reuses those of the unmasked pass.
    Both are unbiased estimates of the same expected loss, but shared draws give a noisier
    gradient (1.6x the variance in ``benchmarks/bench_masked_draws_variance.py``). Without a
    mask plan (DiT) the loss is the unmasked one alone. The trainer draws the randomness of the whole global
    batch from ``(seed, step)``; :meth:`draw` draws it from one generator. Nothing reads
    tensor values on the host, so on an accelerator the step has no host sync. The model
    runs under whatever autocast the caller set; the diffusion math runs in fp32
    (:func:`~mdtblocks.diffusion.fp32_math`).

    Attributes:
        diffusion: the training process (``create_diffusion()``; MDTv2: ``snr_gamma=5``).
        masked_weight: weight of the masked loss (official: 1).
        masked_draws: ``"independent"`` (the official protocol) or ``"shared"``: whether the
            masked pass has its own noise and label drops or reuses the unmasked pass's.
    """

    diffusion: GaussianDiffusion
    masked_weight: float | int = 1.0
    masked_draws: Literal["shared", "independent"] = "independent"

    def __post_init__(self) -> None:
        if self.masked_draws not in ("shared", "independent"):
            raise ValueError(f"masked_draws must be 'shared' or 'independent', got {self.masked_draws!r}")

    @property
    def independent(self) -> bool:
        """The masked pass has its own noise and label drops (the official protocol)."""
        return self.masked_draws == "independent"

    def __call__(
        self,
        net: nn.Module,
        x_start: Image,
        y: Labels,
        randomness: StepRandomness,
        model_kwargs: dict[str, Any] | None = None,
    ) -> dict[str, Shaped[Tensor, "b"]]:
        """Per-sample losses of one batch.

        Args:
            net: the denoiser as called (DDP-, compile- or autocast-wrapped is fine),
                ``net(x_t, t, y, ids_keep=None)``.
            x_start: clean latents.
            y: class labels, before dropout.
            randomness: the step's draws for these samples.
            model_kwargs: extra model arguments for both passes.

        Returns:
            ``(b,)`` tensors: ``"loss"`` (to average and backpropagate), ``"loss_unmasked"``,
            ``"mse"`` and (learned sigma) ``"vb"`` of the full pass; with a mask plan also
            ``"loss_masked"``, ``"mse_masked"`` and ``"vb_masked"``; and the ``"t"`` used.
        """
        r = randomness
        kwargs = {"y": torch.where(r.drop_label, r.null_class, y), **(model_kwargs or {})}
        full = training_losses(self.diffusion, net, x_start, r.t, kwargs, r.noise)
        out = {"loss_unmasked": full["loss"], "mse": full["mse"], "t": r.t}
        if "vb" in full:
            out["vb"] = full["vb"]
        loss = full["loss"]
        if r.mask is not None:
            noise, masked_kwargs = r.noise, {**kwargs, "ids_keep": r.mask.ids_keep}
            if self.independent:
                if r.masked_noise is None or r.masked_drop_label is None:
                    raise ValueError(
                        "masked_draws='independent' needs the masked pass's own draws: the StepRandomness has "
                        "masked_noise=None or masked_drop_label=None (draw it with objective.draw or "
                        "draw_step_randomness(..., independent_masked_pass=True))"
                    )
                noise = r.masked_noise
                masked_kwargs["y"] = torch.where(r.masked_drop_label, r.null_class, y)
            masked = training_losses(self.diffusion, net, x_start, r.t, masked_kwargs, noise)
            out.update({f"{name}_masked": value for name, value in masked.items()})
            loss = loss + self.masked_weight * masked["loss"]
        out["loss"] = loss
        return out

    def draw(self, model: nn.Module, x_start: Image, generator: torch.Generator | None) -> StepRandomness:
        """Draw a step's randomness for ``x_start`` from ``generator``, in the order t, noise, label drops, mask.

        With ``masked_draws="independent"`` the masked pass's noise and label drops follow,
        in that order (the earlier draws are those of ``"shared"``).

        Args:
            model: the backbone (not a wrapper): its ``mask_sampler`` and ``num_tokens`` give
                the mask plan, its ``y_embedder`` the label dropout (drawn in training mode only).
            x_start: the clean batch (its shape and device).
            generator: the source of every draw (required; ``None`` is refused with a message).
        """
        if not isinstance(generator, torch.Generator):
            raise TypeError(
                f"generator must be a torch.Generator: the objective must draw t, noise, mask and label drops "
                f"from it, got {type(generator).__name__}"
            )
        b, device = x_start.shape[0], x_start.device
        t = torch.randint(0, self.diffusion.num_timesteps, (b,), generator=generator, device=generator.device)
        with fp32_math(device):
            noise = gaussian_noise(x_start.to(math_dtype(x_start)), generator)
        labels = model.y_embedder
        if model.training:  # label dropout is a training-mode behaviour, as in the model itself
            drop = labels.draw_drops(b, generator, device)
        else:
            drop = torch.zeros(b, dtype=torch.bool, device=device)
        sampler = getattr(model, "mask_sampler", None)
        mask = None if sampler is None else sampler(b, model.num_tokens, generator=generator, device=device)
        masked_noise = masked_drop = None
        if mask is not None and self.independent:
            with fp32_math(device):
                masked_noise = gaussian_noise(x_start.to(math_dtype(x_start)), generator)
            masked_drop = labels.draw_drops(b, generator, device) if model.training else torch.zeros_like(drop)
        return StepRandomness(t.to(device), noise, drop, mask, labels.num_classes, masked_noise, masked_drop)
