"""MaskDiT's training loss: the objective's denoising loss on the visible patches plus an MAE reconstruction loss on the dropped ones."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch.nn.functional as F
from jaxtyping import Float, Shaped
from torch import Tensor

from ..blocks import patchify
from ..masking import MaskPlan
from ..objectives.base import PointwiseObjective
from ..objectives.edm import EDMObjective

__all__ = ["visible_patch_mean", "mae_reconstruction_loss", "MaskDiTLoss", "check_pointwise"]

Image = Float[Tensor, "b c hh ww"]


def _check_mask(error: Image, mask: Tensor, patch_size: int) -> None:
    if isinstance(patch_size, bool) or not isinstance(patch_size, int) or patch_size < 1:
        raise ValueError(f"patch_size must be a positive int, got {patch_size!r}")
    b, _, hh, ww = error.shape
    if hh % patch_size or ww % patch_size:
        raise ValueError(f"an image of {hh}x{ww} does not split into patches of {patch_size}")
    n = (hh // patch_size) * (ww // patch_size)
    if mask.shape != (b, n):
        raise ValueError(f"mask has shape {tuple(mask.shape)}, expected (batch={b}, tokens={n}) for {patch_size}-patches")


def visible_patch_mean(error: Image, mask: Float[Tensor, "b n"], patch_size: int) -> Float[Tensor, "b"]:
    """Per-sample mean of ``error`` over the patches that were kept (``mask == 0``).

    Each patch contributes the mean of its ``p * p * c`` elements; the patches are in
    row-major grid order, as a :class:`~mdtblocks.masking.MaskPlan`'s ``mask``.
    """
    _check_mask(error, mask, patch_size)
    per_patch = F.avg_pool2d(error.mean(dim=1, keepdim=True), patch_size).flatten(1)  # (b, n)
    keep = 1.0 - mask.to(per_patch.dtype)
    return (per_patch * keep).sum(dim=1) / keep.sum(dim=1)


def mae_reconstruction_loss(
    prediction: Image, target: Image, mask: Float[Tensor, "b n"], patch_size: int, *, norm_pix: bool = True
) -> Float[Tensor, "b"]:
    """Per-sample mean squared error on the dropped patches (``mask == 1``), as in MAE (He et al. 2022).

    With ``norm_pix`` each target patch is standardised by its own mean and (unbiased)
    variance, ``(t - mean) / sqrt(var + 1e-6)``, MAE's normalised-pixel target.
    """
    _check_mask(prediction, mask, patch_size)
    if prediction.shape != target.shape:
        raise ValueError(f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} differ in shape")
    pred, tgt = patchify(prediction, patch_size), patchify(target, patch_size)  # (b, n, p*p*c)
    if norm_pix:
        tgt = (tgt - tgt.mean(dim=-1, keepdim=True)) / (tgt.var(dim=-1, keepdim=True) + 1e-6).sqrt()
    per_patch = ((pred - tgt) ** 2).mean(dim=-1)  # (b, n)
    dropped = mask.to(per_patch.dtype)
    return (per_patch * dropped).sum(dim=1) / dropped.sum(dim=1)


def check_pointwise(objective: object) -> None:
    """Raise ``TypeError`` unless ``objective`` gives its loss terms per element (``pointwise_losses``), as the
    Gaussian diffusion, flow matching and EDM do: the visible-patch mean needs them before their reduction."""
    if not callable(getattr(objective, "pointwise_losses", None)):
        raise TypeError(
            f"MaskDiT's loss averages the objective's terms over the visible patches, so it needs an objective with "
            f"pointwise_losses() (the Gaussian diffusion, flow matching, EDM); {type(objective).__name__} has none"
        )


@dataclass(frozen=True)
class MaskDiTLoss:
    """The MaskDiT step loss for one plan of dropped tokens (Zheng et al. 2024, Section 3), over any objective.

    With a plan, the backbone runs with ``ids_keep = plan.ids_keep``; the loss is the
    objective's loss with every per-element term (its
    :meth:`~mdtblocks.objectives.base.PointwiseObjective.pointwise_losses`) averaged over
    the visible patches instead of all of them, plus ``mae_weight`` times the MAE loss
    between the objective's reconstruction and the (normalised) noisy input on the
    dropped patches. The MAE target is the noisy input because the decoder sees nothing
    of the dropped patches and has to reconstruct what the network was given.

    - **EDM** (MaskDiT's own): ``lambda(sigma) (D - x_0)^2`` on the visible patches; the
      MAE term compares the denoised ``D``.
    - **The Gaussian diffusion**: its mse term and, with learned sigma, its vb term,
      each averaged over the visible patches' elements (the vb term is a sum of one KL
      per element, so this is the bound's term on the visible elements alone); the MAE
      term compares the prediction channels (epsilon, ``x_0`` or ``v``).
    - **Flow matching**: its mse (and cosine) terms on the visible patches; the MAE term
      compares the prediction (velocity, score or noise).

    Without a plan (the unmasked fine-tune stage, or sampling) it is the objective's
    plain loss.

    Attributes:
        objective: the objective (EDM, the Gaussian diffusion, flow matching: any with ``pointwise_losses``).
        patch_size: the backbone's patch side.
        mae_weight: weight of the MAE term (official: 0.1).
        norm_pix: standardise each MAE target patch (official: true).
    """

    patch_size: int
    objective: PointwiseObjective = field(default_factory=EDMObjective)
    mae_weight: float = 0.1
    norm_pix: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.patch_size, bool) or not isinstance(self.patch_size, int) or self.patch_size < 1:
            raise ValueError(f"patch_size must be a positive int, got {self.patch_size!r}")
        check_pointwise(self.objective)
        w = self.mae_weight
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
            raise ValueError(f"mae_weight must be a non-negative finite number, got {w!r}")

    def __call__(
        self,
        net: Callable[..., Tensor],
        x_start: Image,
        times: Shaped[Tensor, "b"],
        noise: Image,
        plan: MaskPlan | None,
        model_kwargs: Mapping[str, Any],
    ) -> dict[str, Float[Tensor, "b"]]:
        """Per-sample terms: ``"loss"`` (to average and backpropagate), ``"denoise"`` (the objective's loss on the
        visible patches), the objective's named terms on them and, with a plan, ``"mae"``.

        Args:
            net: the backbone as called.
            x_start: clean data.
            times: the objective's times (EDM: ``sigma``).
            noise: the pass's noise.
            plan: the dropped tokens, or ``None`` for a pass over every token.
            model_kwargs: further model arguments (labels).

        Raises:
            ValueError: ``model_kwargs`` already holds ``ids_keep``, or shapes disagree.
        """
        if "ids_keep" in model_kwargs:
            raise ValueError("pass the dropped tokens as plan, not as model_kwargs['ids_keep']")
        kwargs = dict(model_kwargs)
        if plan is None:
            terms = self.objective.losses(net, x_start, times, noise, kwargs)
            return {**terms, "denoise": terms["loss"]}
        kwargs["ids_keep"] = plan.ids_keep
        pointwise = self.objective.pointwise_losses(net, x_start, times, noise, kwargs)
        visible = pointwise.reduce(lambda term: visible_patch_mean(term, plan.mask, self.patch_size))
        denoise = visible.pop("loss")
        terms = {"denoise": denoise, **visible}
        loss = denoise
        if self.mae_weight > 0:
            mae = mae_reconstruction_loss(
                pointwise.reconstruction, pointwise.noisy, plan.mask, self.patch_size, norm_pix=self.norm_pix
            )
            terms["mae"] = mae
            loss = denoise + self.mae_weight * mae
        return {"loss": loss, **terms}
