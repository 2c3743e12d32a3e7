"""The one table of named model sizes: ``MDT-*``, ``MDTv2-*``, ``DiT-*``, ``SiT-*`` and ``MaskDiT-*`` at patch sizes 2, 4, 8."""

from __future__ import annotations

from typing import Any

__all__ = ["SIZES", "FAMILIES", "PRESETS", "preset"]

# name -> (depth, hidden_size, num_heads), from the official DiT/MDT model tables.
SIZES: dict[str, tuple[int, int, int]] = {
    "S": (12, 384, 6),
    "B": (12, 768, 12),
    "L": (24, 1024, 16),
    "XL": (28, 1152, 16),
}
"""Size letter -> ``(depth, hidden_size, num_heads)``, shared by all families."""

# family -> (model class name, extra fields; decode_layer may depend on size).
# MDTv2 decode_layer: 6 for S and B, 4 for L and XL, as in the official training scripts.
FAMILIES: dict[str, tuple[str, Any]] = {
    "DiT": ("DiT", lambda size: {}),
    # SiT is DiT's network (learn_sigma=True, as SiT's models.py) trained as a flow.
    "SiT": ("SiT", lambda size: {}),
    "MDT": ("MaskedDiffusionTransformer", lambda size: {"decode_layer": 2, "mask_ratio": 0.3, "mask_ratio_range": 0.0}),
    "MDTv2": (
        "MaskedDiffusionTransformer",
        lambda size: {
            "decode_layer": 6 if size in ("S", "B") else 4,
            "mask_ratio": 0.3,
            "mask_ratio_range": 0.2,
            "long_skip": True,
            "dense_skip": True,
        },
    ),
    # MaskDiT: the official decoder (8 blocks of width 512, 16 heads) behind every encoder
    # size, half the tokens dropped in training (configs/train/imagenet256-latent.yaml).
    "MaskDiT": (
        "MaskDiT",
        lambda size: {
            "decoder_hidden_size": 512, "decoder_depth": 8, "decoder_num_heads": 16,
            "mask_ratio": 0.5, "learn_sigma": False,
        },
    ),
}
"""Family -> (model class name, function of the size letter giving the family's extra config fields)."""


def _build() -> dict[str, tuple[str, dict[str, Any]]]:
    table = {}
    for family, (cls, extra) in FAMILIES.items():
        for size, (depth, width, heads) in SIZES.items():
            for patch in (2, 4, 8):
                fields = {"depth": depth, "hidden_size": width, "num_heads": heads, "patch_size": patch, **extra(size)}
                table[f"{family}-{size}/{patch}"] = (cls, fields)
    return table


PRESETS: dict[str, tuple[str, dict[str, Any]]] = _build()
"""Preset name -> (class name, config fields). Input size, channels and classes are given at build time."""


def preset(name: str, cls_name: str) -> dict[str, Any]:
    """Config fields of preset ``name``, checking that it belongs to class ``cls_name``."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; expected one of {sorted(PRESETS)}")
    owner, fields = PRESETS[name]
    if owner != cls_name:
        raise ValueError(f"preset {name!r} builds a {owner}, not a {cls_name}")
    return dict(fields)
