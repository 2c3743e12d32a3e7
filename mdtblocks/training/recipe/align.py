"""The recipes' ``--align`` flags: the frozen encoder, the cache's stored features and the alignment extra loss.

REPA's targets come from the batch when training from a latent cache that stores the
encoder's features (``recipes/extract_latents.py --align-encoder ...``; a cache made with
another encoder, or without features, is refused), and otherwise from the encoder run on
the clean images of each batch (images or the built-in digits).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ...alignment import AlignmentLoss, Dinov2Encoder, FrozenEncoder, InceptionEncoder
from ...data import LatentDataset
from .cli import RecipeConfig

__all__ = ["load_align_encoder", "default_align_depth", "build_alignment"]


def load_align_encoder(spec: str) -> FrozenEncoder:
    """``"inception"``: the FID InceptionV3's ``mixed_6`` (offline); otherwise a local DINOv2 folder."""
    if spec.lower() == "inception":
        return InceptionEncoder()
    return Dinov2Encoder(spec)


def default_align_depth(depth: int) -> int:
    """REPA's block 8 of 28 scaled to a network of ``depth`` blocks (rounded, at least 1)."""
    return max(1, round(depth * 8 / 28))


def build_alignment(cfg: RecipeConfig, model: nn.Module, dataset: Any) -> tuple[AlignmentLoss | None, Any]:
    """``(loss, dataset)``: the alignment loss the flags ask for, attached to ``model`` (REPA's projector added), or ``None``.

    With a latent cache, the dataset is reopened to yield the stored features of the
    encoder (refused if the cache stores another encoder's, or none), and the encoder is
    not kept: training never runs it. Otherwise the encoder runs on each batch's images.

    Raises:
        ValueError: a depth past the network, a cache without this encoder's features, or an
            encoder folder that is not one.
    """
    if cfg.align == "none":
        return None, dataset
    blocks = len(model.trunk())  # type: ignore[operator]
    depth = cfg.align_depth if cfg.align_depth is not None else default_align_depth(blocks)
    if depth > blocks:
        raise ValueError(f"--align-depth {depth} is past the network's depth {blocks} ({cfg.model}); use 1..{blocks}")
    if cfg.align == "dispersive":
        coeff = 0.25 if cfg.align_coeff is None else cfg.align_coeff
        return AlignmentLoss("dispersive", depth, coeff, cfg.align_pass).attach(model), dataset
    assert cfg.align_encoder is not None  # config_problems
    encoder = load_align_encoder(cfg.align_encoder)
    record = encoder.record()
    if cfg.latents is not None:
        dataset = LatentDataset(cfg.latents, flip=cfg.flip, align_encoder=record)  # refuses another encoder's features
        encoder_in_loop = None
    else:
        encoder_in_loop = encoder.to(next(model.parameters()).device)
    coeff = 0.5 if cfg.align_coeff is None else cfg.align_coeff
    loss = AlignmentLoss(
        "repa", depth, coeff, cfg.align_pass, encoder=record, target_dim=encoder.feature_dim,
        projector_dim=cfg.align_projector_dim,
    )
    return loss.attach(model, encoder_in_loop), dataset
