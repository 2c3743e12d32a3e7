"""Frozen, typed configurations of the model families."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, TypeVar

from ..blocks.attention import BACKENDS

__all__ = ["DiTConfig", "MDTConfig", "MaskDiTConfig", "config_from_dict"]

C = TypeVar("C")


def _check_common(cfg: Any) -> None:
    for name in ("input_size", "patch_size", "in_channels", "hidden_size", "depth", "num_heads", "num_classes"):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {value!r}")
        if value < (0 if name == "depth" else 1):
            raise ValueError(f"{name} must be positive, got {value}")
    if cfg.input_size % cfg.patch_size:
        raise ValueError(f"input_size {cfg.input_size} is not divisible by patch_size {cfg.patch_size}")
    if cfg.hidden_size % cfg.num_heads:
        raise ValueError(f"hidden_size {cfg.hidden_size} is not divisible by num_heads {cfg.num_heads}")
    if cfg.hidden_size % 4:
        raise ValueError(f"hidden_size {cfg.hidden_size} must be divisible by 4 (2-D sin-cos positions)")
    if not 0.0 <= cfg.class_dropout_prob < 1.0:
        raise ValueError(f"class_dropout_prob {cfg.class_dropout_prob} is outside [0, 1)")
    if cfg.attention_backend not in BACKENDS:
        raise ValueError(f"attention_backend {cfg.attention_backend!r} is not one of {BACKENDS}")


@dataclass(frozen=True)
class DiTConfig:
    """Sizes of a :class:`~mdtblocks.DiT`.

    Attributes:
        input_size: side of the square input (latent cells or pixels).
        patch_size: side of a patch.
        in_channels: input channels (4 for SD-VAE latents).
        hidden_size: width ``d``.
        depth: number of transformer blocks.
        num_heads: attention heads.
        mlp_ratio: MLP width multiple.
        num_classes: real classes; the null class ``num_classes`` exists iff ``class_dropout_prob > 0``.
        class_dropout_prob: label dropout for classifier-free guidance.
        learn_sigma: predict the variance too (output channels doubled).
        attention_backend: ``"sdpa"``, ``"xformers"`` or ``"math"``.
    """

    input_size: int = 32
    patch_size: int = 2
    in_channels: int = 4
    hidden_size: int = 1152
    depth: int = 28
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_classes: int = 1000
    class_dropout_prob: float = 0.1
    learn_sigma: bool = True
    attention_backend: str = "sdpa"

    def __post_init__(self) -> None:
        _check_common(self)

    @property
    def out_channels(self) -> int:
        """Output channels: twice the input channels when sigma is learned."""
        return self.in_channels * (2 if self.learn_sigma else 1)

    @property
    def grid(self) -> tuple[int, int]:
        """Patch grid ``(gh, gw)``."""
        side = self.input_size // self.patch_size
        return (side, side)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return asdict(self)


@dataclass(frozen=True)
class MDTConfig(DiTConfig):
    """Sizes and masking of a :class:`~mdtblocks.MaskedDiffusionTransformer` (MDT v1 or MDTv2).

    Attributes:
        depth: transformer blocks outside the side-interpolater. MDT v1: ``depth -
            decode_layer`` encoder blocks, then ``decode_layer`` decoder blocks. MDTv2
            (``long_skip``): ``2 * ((depth - decode_layer) // 2)`` encoder blocks in two
            halves joined by long shortcuts, as the official code builds them.
        decode_layer: decoder blocks after the side-interpolater.
        side_blocks: blocks inside the side-interpolater (1 officially).
        mask_ratio: lower end of the training mask ratio, ``None`` for a model without
            masked training (the side-interpolater and mask token still exist).
        mask_ratio_range: width of the per-batch random mask ratio interval (MDTv2: 0.2).
        long_skip: MDTv2's long shortcuts from the first to the second encoder half.
        dense_skip: MDTv2's dense shortcut of the input tokens into every decoder block.
    """

    decode_layer: int = 2
    side_blocks: int = 1
    mask_ratio: float | None = 0.3
    mask_ratio_range: float = 0.0
    long_skip: bool = False
    dense_skip: bool = False

    def __post_init__(self) -> None:
        _check_common(self)
        if not 0 <= self.decode_layer <= self.depth:
            raise ValueError(f"decode_layer {self.decode_layer} must lie in [0, depth={self.depth}]")
        if self.side_blocks < 1:
            raise ValueError(f"side_blocks must be at least 1, got {self.side_blocks}")

    @property
    def encoder_depth(self) -> int:
        """Encoder blocks (before the side-interpolater)."""
        rest = self.depth - self.decode_layer
        return 2 * (rest // 2) if self.long_skip else rest


@dataclass(frozen=True)
class MaskDiTConfig(DiTConfig):
    """Sizes of a :class:`~mdtblocks.models.maskdit.MaskDiT` (Zheng et al., TMLR 2024).

    The encoder is a DiT of ``depth`` blocks of width ``hidden_size``; the decoder has
    ``decoder_depth`` blocks of width ``decoder_hidden_size`` (official: 8 blocks of 512
    with 16 heads, for every encoder size), conditioned on the encoder-width ``c``.
    Labels embed linearly with a zero null class, and the variance is not learned
    (EDM's preconditioning has no use for it): ``learn_sigma`` defaults to false.

    Attributes:
        decoder_hidden_size: decoder width.
        decoder_depth: decoder blocks.
        decoder_num_heads: decoder attention heads.
        mask_ratio: training ratio of dropped tokens (official: 0.5), ``None`` for a model
            without a drop rule; 0 is the unmasked fine-tune stage.
    """

    learn_sigma: bool = False
    decoder_hidden_size: int = 512
    decoder_depth: int = 8
    decoder_num_heads: int = 16
    mask_ratio: float | None = 0.5

    def __post_init__(self) -> None:
        _check_common(self)
        for name in ("decoder_hidden_size", "decoder_depth", "decoder_num_heads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "decoder_depth" else 1):
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.decoder_hidden_size % self.decoder_num_heads or self.decoder_hidden_size % 4:
            raise ValueError(
                f"decoder_hidden_size {self.decoder_hidden_size} must be divisible by decoder_num_heads "
                f"{self.decoder_num_heads} and by 4"
            )
        if self.mask_ratio is not None and (
            isinstance(self.mask_ratio, bool) or not isinstance(self.mask_ratio, (int, float)) or not 0.0 <= self.mask_ratio < 1.0
        ):
            raise ValueError(f"mask_ratio must lie in [0, 1) or be None, got {self.mask_ratio!r}")


def config_from_dict(cls: type[C], data: dict[str, Any]) -> C:
    """Build ``cls`` from a dict, rejecting unknown keys by name."""
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields {unknown}; expected a subset of {sorted(known)}")
    return cls(**data)
