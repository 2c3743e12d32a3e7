"""MaskDiT's token rule: one pass in which the encoder sees only the kept tokens; loss on the visible patches plus MAE.

MaskDiT (Zheng et al., TMLR 2024) drops a random share of every sample's tokens
before the encoder and lets a light decoder with a learned mask token fill them in. The
step's single pass is scored by :class:`~mdtblocks.losses.MaskDiTLoss`: the objective's
per-element loss terms averaged over the kept patches, plus ``mae_weight`` times an MAE
reconstruction error on the dropped ones. It draws the same kind of plan as MDT's masked
pass (:class:`~mdtblocks.masking.MaskSampler`), so the three methods' token choices are
rules over one mask plan. At ``mask_ratio`` 0 (the unmasked fine-tune) it is the
objective's plain step.

Supported:

- objectives: every one with per-element terms (``pointwise_losses``): EDM (MaskDiT's
  own), the Gaussian diffusion (its vb term, with learned sigma, averaged over the visible
  elements as the mse term is) and flow matching;
- backbones whose forward takes ``ids_keep`` and still returns every patch: MaskDiT (its
  decoder fills the dropped positions with a mask token) and MDT/MDTv2 (the
  side-interpolater fills them). DiT and SiT are refused: every block runs on the tokens
  it is given and nothing produces the dropped patches' outputs (the MAE term's input).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from jaxtyping import Float, Shaped
from torch import Tensor, nn

from ..masking import MaskPlan, MaskSampler
from .rules import TokenPass, register_token_rule

__all__ = ["MaskDiTDropRule"]


@dataclass(frozen=True)
class MaskDiTDropRule:
    """MaskDiT's step: one pass over the kept tokens (a share ``mask_ratio`` dropped), MAE term on the dropped patches.

    Attributes:
        mask_ratio: share of tokens dropped per sample (official pre-training: 0.5; fine-tune: 0).
        mae_weight: weight of the MAE reconstruction term (official: 0.1).
        norm_pix: standardise each MAE target patch (official: true).
    """

    kind: ClassVar[str] = "maskdit_drop"
    own_draws: ClassVar[bool] = False

    mask_ratio: float = 0.5
    mae_weight: float = 0.1
    norm_pix: bool = True

    def __post_init__(self) -> None:
        r, w = self.mask_ratio, self.mae_weight
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0.0 <= r < 1.0:
            raise ValueError(f"MaskDiTDropRule.mask_ratio must be in [0, 1), got {r!r}")
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
            raise ValueError(f"MaskDiTDropRule.mae_weight must be a non-negative finite number, got {w!r}")
        if not isinstance(self.norm_pix, bool):
            raise TypeError(f"MaskDiTDropRule.norm_pix must be a bool, got {self.norm_pix!r}")

    @property
    def sampler(self) -> MaskSampler | None:
        """The mask sampler of ``mask_ratio`` (``None`` at ratio 0: nothing is dropped)."""
        return MaskSampler(float(self.mask_ratio)) if self.mask_ratio > 0 else None

    def draw(
        self, batch: int, num_tokens: int, generator: torch.Generator, device: torch.device | str | None = None
    ) -> MaskPlan | None:
        """A random plan dropping ``mask_ratio`` of the tokens (``None`` at ratio 0)."""
        sampler = self.sampler
        return None if sampler is None else sampler(batch, num_tokens, generator=generator, device=device)

    def passes(self, plan: MaskPlan | None) -> tuple[TokenPass, ...]:
        """One primary pass: over the kept tokens with a plan, over all of them without."""
        if plan is None:
            return (TokenPass("unmasked", primary=True),)
        return (TokenPass("dropped", ids_keep=plan.ids_keep, primary=True),)

    def check_objective(self, objective: object) -> None:
        """Raise ``ValueError`` unless ``objective`` gives its loss terms per element (``pointwise_losses``)."""
        if not callable(getattr(objective, "pointwise_losses", None)):
            raise ValueError(
                f"MaskDiT's dropping averages the objective's loss over the visible patches, which needs its terms per "
                f"element (pointwise_losses: the Gaussian diffusion, flow matching, EDM); the "
                f"{getattr(objective, 'kind', type(objective).__name__)!r} objective has none. Route tokens (--route) instead"
            )

    def check_model(self, model: nn.Module) -> None:
        """Raise ``ValueError`` unless ``model`` fills the dropped positions itself (MaskDiT, MDT, MDTv2).

        Such a backbone has encoder blocks that see only the kept tokens (``kept_only_blocks``)
        and a part that puts the dropped positions back (MaskDiT's mask token, MDT's
        side-interpolater), so its output covers every patch.
        """
        if self.mask_ratio > 0 and getattr(model, "kept_only_blocks", 0) <= 0:
            raise ValueError(
                f"MaskDiT's token dropping needs a backbone that runs on the kept tokens and fills the dropped ones back "
                f"(MaskDiT's decoder mask token, MDT's side-interpolater); {type(model).__name__} runs every block on the "
                "tokens it is given and returns no output for dropped patches (for DiT and SiT route tokens with --route)"
            )

    def losses(
        self,
        objective: Any,
        net: Callable[..., Tensor],
        x_start: Float[Tensor, "b c hh ww"],
        times: Shaped[Tensor, "b"],
        noise: Float[Tensor, "b c hh ww"],
        model_kwargs: Mapping[str, Any],
        plan: MaskPlan | None,
    ) -> dict[str, Float[Tensor, "b"]]:
        """The pass's terms by :class:`~mdtblocks.losses.MaskDiTLoss`: ``loss``, ``denoise`` and, with a plan, ``mae``."""
        from ..losses.mae import MaskDiTLoss

        self.check_objective(objective)
        kwargs = {k: v for k, v in model_kwargs.items() if k != "ids_keep"}
        patch = 1
        if plan is not None:
            hh, ww = x_start.shape[-2:]
            patch = math.isqrt(hh * ww // plan.mask.shape[1])
            if patch * patch * plan.mask.shape[1] != hh * ww:
                raise ValueError(f"a plan over {plan.mask.shape[1]} tokens does not tile a {hh}x{ww} input into square patches")
        loss = MaskDiTLoss(patch, objective, float(self.mae_weight), self.norm_pix)
        return loss(net, x_start, times, noise, plan, kwargs)

    def to_record(self) -> dict[str, Any]:
        """``{"kind": "maskdit_drop", "mask_ratio", "mae_weight", "norm_pix"}``."""
        return {"kind": self.kind, "mask_ratio": float(self.mask_ratio), "mae_weight": float(self.mae_weight),
                "norm_pix": bool(self.norm_pix)}


register_token_rule(
    MaskDiTDropRule.kind, lambda record: MaskDiTDropRule(**{k: v for k, v in record.items() if k != "kind"})
)
