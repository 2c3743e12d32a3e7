"""MDT's training objective: the diffusion loss of the full input plus that of a masked pass."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float, Int, Shaped
from torch import Tensor, nn

from ..masking import MaskPlan
from .gaussian import GaussianDiffusion
from .losses import training_losses
from .process import fp32_math
from .noise import gaussian_noise

__all__ = ["MaskedDiffusionObjective"]


def _unwrap(model: nn.Module) -> nn.Module:
    # DDP and the trainer's autocast wrapper keep the network in .module, torch.compile in
    # ._orig_mod; they may nest in any order.
    while True:
        inner = next(
            (getattr(model, a) for a in ("module", "_orig_mod") if isinstance(getattr(model, a, None), nn.Module)), None
        )
        if inner is None:
            return model
        model = inner


@dataclass(frozen=True)
class MaskedDiffusionObjective:
    """The MDT / MDTv2 loss: ``loss(x_t) + masked_weight * loss(x_t with masked tokens)``.

    Both passes share the timestep, the noise and the (dropped) labels; the mask plan
    comes from ``model.mask_sampler`` (Gao et al. 2023, Sec. 3.2). A model without a
    mask sampler (DiT) gets the unmasked loss alone. Every random draw (timesteps,
    noise, label dropout, mask) comes from the ``generator`` passed in; nothing reads
    tensor values on the host, so on an accelerator the step has no host sync
    (with a CUDA generator; MDTv2's random mask ratio is read from the generator).

    The model runs under whatever autocast the caller set; the diffusion math runs in fp32.

    Attributes:
        diffusion: the training process (``create_diffusion()``; MDTv2: ``snr_gamma=5``).
        masked_weight: weight of the masked loss (official: 1).
        drop_labels: apply the model's classifier-free-guidance label dropout in training mode.
    """

    diffusion: GaussianDiffusion
    masked_weight: float | int = 1.0
    drop_labels: bool = True

    def __call__(
        self,
        model: nn.Module,
        x_start: Float[Tensor, "b c hh ww"],
        y: Int[Tensor, "b"],
        *,
        generator: torch.Generator | None,
        t: Int[Tensor, "b"] | None = None,
        noise: Float[Tensor, "b c hh ww"] | None = None,
        mask: MaskPlan | None = None,
        model_kwargs: dict[str, Any] | None = None,
    ) -> dict[str, Shaped[Tensor, "b"]]:
        """Per-sample losses of one batch.

        Args:
            model: the denoiser (DDP- or compile-wrapped is fine); ``model(x, t, y, ids_keep=None)``.
            x_start: clean latents.
            y: class labels.
            generator: the source of every random draw; may be ``None`` only when ``t``,
                ``noise`` and (for a masked model) ``mask`` are given and no labels are dropped.
            t: timesteps to use instead of uniform draws.
            noise: noise to use instead of a draw.
            mask: mask plan to use instead of ``model.mask_sampler``'s.
            model_kwargs: extra model arguments for both passes.

        Returns:
            ``(b,)`` tensors: ``"loss"`` (to average and backpropagate), ``"loss_unmasked"``,
            ``"mse"`` and (learned sigma) ``"vb"`` of the full pass; with a mask sampler also
            ``"loss_masked"``, ``"mse_masked"`` and ``"vb_masked"``; and the ``"t"`` used.
        """
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        b, device = x_start.shape[0], x_start.device
        net = _unwrap(model)
        sampler = getattr(net, "mask_sampler", None)
        drop = self.drop_labels and net.training and hasattr(net, "drop_labels")
        if generator is None:
            needs = [
                name
                for name, missing in (
                    ("t", t is None),
                    ("noise", noise is None),
                    ("mask", mask is None and sampler is not None),
                    ("label dropout", drop),
                )
                if missing
            ]
            if needs:
                raise TypeError(
                    f"generator is None but the objective must draw {', '.join(needs)}; pass a torch.Generator"
                )
        if t is None:
            t = torch.randint(0, self.diffusion.num_timesteps, (b,), generator=generator, device=generator.device)
            t = t.to(device)
        with fp32_math(device):
            x32 = x_start.to(torch.float64 if x_start.dtype == torch.float64 else torch.float32)
            if noise is None:
                noise = gaussian_noise(x32, generator)
        if drop:
            y = net.drop_labels(y, generator)
        kwargs = {"y": y, **(model_kwargs or {})}

        full = training_losses(self.diffusion, model, x32, t, kwargs, noise)
        result = {"loss_unmasked": full["loss"], "mse": full["mse"], "t": t}
        if "vb" in full:
            result["vb"] = full["vb"]
        loss = full["loss"]

        if mask is None and sampler is not None:
            mask = sampler(b, net.num_tokens, generator=generator, device=device)
        if mask is not None:
            masked = training_losses(self.diffusion, model, x32, t, {**kwargs, "ids_keep": mask.ids_keep}, noise)
            result["loss_masked"] = masked["loss"]
            result["mse_masked"] = masked["mse"]
            if "vb" in masked:
                result["vb_masked"] = masked["vb"]
            loss = loss + self.masked_weight * masked["loss"]
        result["loss"] = loss
        return result
