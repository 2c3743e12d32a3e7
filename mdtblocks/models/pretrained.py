"""Load any mdtblocks model folder, whichever class wrote it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..io import read_json
from .base import CONFIG_NAME, WEIGHTS_NAME, DiffusionBackbone
from .dit import DiT
from .mdt import MaskedDiffusionTransformer
from .maskdit import MaskDiT
from .sit import SiT

__all__ = ["MODEL_CLASSES", "load_pretrained"]

MODEL_CLASSES: dict[str, type[DiffusionBackbone]] = {cls.__name__: cls for cls in (MaskedDiffusionTransformer, DiT, SiT, MaskDiT)}
"""Model classes by the name ``save_pretrained`` records in ``config.json``."""


def load_pretrained(directory: str | os.PathLike, weights_name: str = WEIGHTS_NAME, **overrides: Any) -> DiffusionBackbone:
    """Load a folder written by ``save_pretrained`` (or a training checkpoint folder), in eval mode.

    Args:
        directory: folder with ``config.json`` (whose ``"class"`` names the model class).
        weights_name: safetensors file in it, e.g. ``"ema.safetensors"``.
        **overrides: config fields that do not change the weights.
    """
    name = read_json(Path(directory) / CONFIG_NAME).get("class")
    if name not in MODEL_CLASSES:
        raise ValueError(f"{directory}/{CONFIG_NAME} names class {name!r}; expected one of {sorted(MODEL_CLASSES)}")
    return MODEL_CLASSES[name].from_pretrained(directory, weights_name=weights_name, **overrides)
