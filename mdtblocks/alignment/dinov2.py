"""DINOv2 (Oquab et al. 2023) from a local folder, through ``transformers``' ``Dinov2Model``: REPA's encoder."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from .encoder import FrozenEncoder, to_unit_rgb

__all__ = ["Dinov2Encoder", "IMAGENET_MEAN", "IMAGENET_STD"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
"""ImageNet channel means DINOv2 was trained with."""
IMAGENET_STD = (0.229, 0.224, 0.225)
"""ImageNet channel standard deviations DINOv2 was trained with."""


class Dinov2Encoder(FrozenEncoder):
    """A DINOv2 ViT's normalised patch tokens (the last layer's, class token dropped) as a feature map.

    Preprocessing as REPA's: pixels to ``[0, 1]``, ImageNet mean/std normalisation,
    then bicubic resizing to ``resolution`` (224 for 256-pixel images: a 16 x 16 grid of
    14-pixel patches, the token grid of a /2 backbone on 32 x 32 latents).

    Args:
        folder: a local folder written by ``Dinov2Model.save_pretrained`` (``config.json``
            with ``model_type`` ``"dinov2"`` and the weights). Nothing is downloaded.
        resolution: side length images are resized to; a multiple of the patch size.

    Raises:
        ValueError: the folder does not hold a DINOv2 model, or ``resolution`` does not fit its patches.
    """

    def __init__(self, folder: str | os.PathLike, resolution: int = 224) -> None:
        super().__init__()
        try:
            from transformers import (
                Dinov2Model,  # optional dependency, only for this encoder
            )
        except ImportError as err:
            raise ModuleNotFoundError("Dinov2Encoder needs transformers: pip install 'mdtblocks[align]'") from err

        path = Path(folder)
        config_file = path / "config.json"
        if not path.is_dir() or not config_file.is_file():
            raise ValueError(f"{str(path)!r} is not a DINOv2 model folder (expected a directory with config.json)")
        try:
            model_type = json.loads(config_file.read_text()).get("model_type")
        except (json.JSONDecodeError, AttributeError) as err:
            raise ValueError(f"{str(config_file)!r} is not a JSON model config: {err}") from err
        if model_type != "dinov2":
            raise ValueError(f"{str(path)!r} holds a {model_type!r} model, not a DINOv2 one (model_type 'dinov2')")
        self.model = Dinov2Model.from_pretrained(str(path), local_files_only=True)
        patch = int(self.model.config.patch_size)
        if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < patch or resolution % patch:
            raise ValueError(f"resolution must be a positive multiple of the patch size {patch}, got {resolution!r}")
        self.folder, self.resolution, self.patch_size = path, resolution, patch
        self.feature_dim = int(self.model.config.hidden_size)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.freeze()

    def preprocess(self, images: Float[Tensor, "b c hh ww"]) -> Float[Tensor, "b 3 r r"]:
        """Library images to the network's input: normalised, then resized (bicubic) to ``resolution``."""
        x = (to_unit_rgb(images) - self.mean) / self.std
        if x.shape[-2:] != (self.resolution, self.resolution):
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bicubic")
        return x

    def feature_map(self, images: Float[Tensor, "b c hh ww"]) -> Float[Tensor, "b e fh fw"]:
        """The last layer's normalised patch tokens (``x_norm_patchtokens``) as a ``(b, e, r/p, r/p)`` map."""
        x = self.preprocess(images)
        tokens = self.model(pixel_values=x).last_hidden_state[:, 1:]  # drop the class token: (b, f*f, e)
        side = self.resolution // self.patch_size
        return tokens.transpose(1, 2).reshape(x.shape[0], self.feature_dim, side, side)

    def record(self) -> dict[str, Any]:
        """``{"kind": "dinov2", "name", "feature_dim", "resolution", "patch_size", "depth"}``."""
        cfg = self.model.config
        return {
            "kind": "dinov2",
            "name": self.folder.name,
            "feature_dim": self.feature_dim,
            "resolution": self.resolution,
            "patch_size": self.patch_size,
            "depth": int(cfg.num_hidden_layers),
        }
