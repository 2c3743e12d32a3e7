"""MaskDiT's token rule and its official ImageNet training stages, as data for a recipe.

MaskDiT (Zheng et al., TMLR 2024) drops a uniformly random half of the tokens of every
sample in pre-training: the same rule as MDT's masked pass at another ratio, so it is a
:class:`~mdtblocks.masking.MaskSampler` (per-sample argsort of uniform draws; kept tokens
``int(n * (1 - ratio))``). A short fine-tune without dropping follows. The stages below
are the official configurations (Anima-Lab/MaskDiT ``configs/train/imagenet256-latent.yaml``
and ``configs/finetune/imagenet256-latent-const.yaml``, 8 GPUs); the recipe that runs them
reads this table.
"""

from __future__ import annotations

from dataclasses import dataclass

from .sampler import MaskSampler

__all__ = ["MaskDiTStage", "maskdit_drop_rule", "MASKDIT_IMAGENET256", "MASKDIT_IMAGENET256_SAMPLING"]


def maskdit_drop_rule(ratio: float = 0.5) -> MaskSampler | None:
    """The mask plan rule of a MaskDiT stage: drop ``ratio`` of the tokens (``None`` at 0: the unmasked fine-tune)."""
    return MaskSampler(ratio) if ratio > 0 else None


@dataclass(frozen=True)
class MaskDiTStage:
    """One training stage of MaskDiT.

    Attributes:
        name: ``"pretrain"`` or ``"finetune"``.
        mask_ratio: ratio of dropped tokens (0: every token, no MAE term).
        mae_weight: weight of the MAE reconstruction loss on the dropped patches.
        steps: optimizer steps of the stage.
        global_batch_size: samples per step over all processes.
        lr: constant learning rate (AdamW, no weight decay, no warm-up).
        mixed_precision: train under autocast (the official pre-training uses AMP, the
            fine-tune fp32 with TF32).
        class_dropout_prob: label dropout for guidance.
        ema_decay: EMA rate of the weights.
    """

    name: str
    mask_ratio: float
    mae_weight: float
    steps: int
    global_batch_size: int
    lr: float
    mixed_precision: bool
    class_dropout_prob: float = 0.1
    ema_decay: float = 0.9999

    def __post_init__(self) -> None:
        if not 0.0 <= self.mask_ratio < 1.0:
            raise ValueError(f"mask_ratio {self.mask_ratio} is outside [0, 1)")
        if self.steps < 1 or self.global_batch_size < 1 or not self.lr > 0:
            raise ValueError(f"stage {self.name!r}: steps, global_batch_size and lr must be positive")

    @property
    def drop_rule(self) -> MaskSampler | None:
        """The stage's mask plan rule (see :func:`maskdit_drop_rule`)."""
        return maskdit_drop_rule(self.mask_ratio)


MASKDIT_IMAGENET256: tuple[MaskDiTStage, ...] = (
    # 128 per GPU x 8 GPUs; 2M updates (about 260 hours on 8 A100s, per the official README)
    MaskDiTStage("pretrain", mask_ratio=0.5, mae_weight=0.1, steps=2_000_000, global_batch_size=1024, lr=1e-4,
                 mixed_precision=True),
    # 64 per GPU x 8 GPUs, from the pre-trained EMA weights, without dropping (the MAE term vanishes)
    MaskDiTStage("finetune", mask_ratio=0.0, mae_weight=0.1, steps=100_000, global_batch_size=512, lr=5e-5,
                 mixed_precision=False),
)
"""MaskDiT-XL/2 on 256 px ImageNet latents (32x32x4, SD-VAE): pre-training, then the unmasked fine-tune."""

MASKDIT_IMAGENET256_SAMPLING: dict[str, object] = {"sampler": "heun", "num_steps": 40, "cfg_scale": 1.5, "S_churn": 0.0}
"""The official FID evaluation: EDM's Heun sampler, 40 levels, constant guidance 1.5 (FID 2.28; unguided 5.69)."""
