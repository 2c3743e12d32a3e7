"""REPA's alignment loss: projected backbone tokens against a frozen encoder's patch features, by cosine."""

from __future__ import annotations

import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn

from .projector import Projector

__all__ = ["RepaLoss", "gather_targets", "negative_cosine"]


def gather_targets(targets: Float[Tensor, "b n e"], ids_keep: Int[Tensor, "b k"]) -> Float[Tensor, "b k e"]:
    """The targets of the kept tokens, in ``ids_keep`` order (the order MDT's masked pass keeps them in)."""
    if ids_keep.ndim != 2 or ids_keep.shape[0] != targets.shape[0]:
        raise ValueError(f"ids_keep has shape {tuple(ids_keep.shape)}, expected (b={targets.shape[0]}, k)")
    return targets.gather(1, ids_keep.unsqueeze(-1).expand(-1, -1, targets.shape[-1]))


def negative_cosine(pred: Float[Tensor, "b n e"], targets: Float[Tensor, "b n e"]) -> Float[Tensor, "b"]:
    """Minus the cosine similarity per token, averaged over tokens, in float32: one value per sample in ``[-1, 1]``."""
    cos = (F.normalize(pred.float(), dim=-1) * F.normalize(targets.float(), dim=-1)).sum(-1)  # (b, n)
    return -cos.mean(-1)


class RepaLoss(nn.Module):
    """REPA (Yu et al. 2024): ``coeff * (-cos(projector(h), z))`` per token, averaged per sample.

    ``h`` are the tokens a :class:`~mdtblocks.alignment.FeatureTap` recorded, ``z`` the
    frozen encoder's patch features of the clean image on the same token grid. The
    module owns the projector; :class:`~mdtblocks.alignment.AlignmentLoss` attaches it to
    the backbone as ``alignment_head`` for training (optimizer, EMA, checkpoint), and
    exported weights leave it out.

    Args:
        hidden_size: backbone width ``d``.
        target_dim: encoder feature width ``d_enc`` (768 for DINOv2-B, 768 for Inception's ``mixed_6``).
        coeff: weight of the loss (REPA's ``proj_coeff``, 0.5).
        projector_dim: hidden width of the projector (2048).
        projector_layers: linear layers of the projector (3).
    """

    def __init__(
        self,
        hidden_size: int,
        target_dim: int,
        coeff: float = 0.5,
        projector_dim: int = 2048,
        projector_layers: int = 3,
    ) -> None:
        super().__init__()
        if not isinstance(coeff, (int, float)) or isinstance(coeff, bool) or not coeff >= 0:
            raise ValueError(f"coeff must be a non-negative number, got {coeff!r}")
        self.coeff = float(coeff)
        self.projector = Projector(hidden_size, target_dim, projector_dim, projector_layers)

    def forward(
        self,
        tokens: Float[Tensor, "b n_or_k d"],
        targets: Float[Tensor, "b n e"],
        ids_keep: Int[Tensor, "b k"] | None = None,
    ) -> Float[Tensor, "b"]:
        """Per-sample alignment loss, already multiplied by ``coeff``.

        Args:
            tokens: the tapped tokens: all ``n`` (row-major grid order), or the ``k`` kept
                ones of MDT's masked pass in ``ids_keep`` order.
            targets: encoder features of the clean images on the full ``n``-token grid
                (no gradient flows into them).
            ids_keep: give it when ``tokens`` are the kept ones
                (:meth:`FeatureTap.ids_for <mdtblocks.alignment.FeatureTap.ids_for>`); the
                targets are gathered with it.

        Returns:
            ``(b,)`` float32 losses.
        """
        if tokens.ndim != 3 or targets.ndim != 3 or tokens.shape[0] != targets.shape[0]:
            raise ValueError(
                f"tokens {tuple(tokens.shape)} and targets {tuple(targets.shape)} must be (b, n_or_k, d) and (b, n, e)"
            )
        targets = targets.detach()
        if ids_keep is not None:
            targets = gather_targets(targets, ids_keep)
        if tokens.shape[1] != targets.shape[1]:
            hint = "" if ids_keep is not None else "; tokens of a masked pass need ids_keep"
            raise ValueError(f"{tokens.shape[1]} tokens but {targets.shape[1]} targets{hint}")
        return self.coeff * negative_cosine(self.projector(tokens), targets)

    def extra_repr(self) -> str:
        """The options, for ``repr``."""
        return f"coeff={self.coeff}"
