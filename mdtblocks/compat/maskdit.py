"""Convert a MaskDiT checkpoint's state dict (Anima-Lab/MaskDiT ``EDMPrecond``) to mdtblocks' :class:`~mdtblocks.MaskDiT` layout.

=====================================  ====================================
official (``EDMPrecond.state_dict``)   mdtblocks
=====================================  ====================================
``model.<name>``                       ``<name>``
``model.decoder_layer.*``              ``decoder_embed.*``
``model.y_embedder.embedding_table``   ``y_embedder.embedding_table``, transposed
  (``Linear(num_classes, d)``)           (an ``Embedding(num_classes, d)``)
=====================================  ====================================

The released checkpoints hold the weights under ``"ema"`` (and ``"model"``); pass
either state dict.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

__all__ = ["maskdit_from_official", "maskdit_to_official"]

_LABELS = "y_embedder.embedding_table.weight"


def maskdit_from_official(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename (and transpose the label table of) an official MaskDiT state dict for :class:`~mdtblocks.MaskDiT`.

    Raises:
        ValueError: a key outside ``model.*`` (not a MaskDiT ``EDMPrecond`` state dict), or
            a class-token layout (``pad_cls_token``, not part of the released models).
    """
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        name = key.removeprefix("_orig_mod.")
        if not name.startswith("model."):
            raise ValueError(f"unexpected key {key!r}: an official MaskDiT state dict has keys 'model.*'")
        name = name.removeprefix("model.")
        if name.startswith(("cls_token", "feat_embedder", "enc_feat_embedder", "cls_token_embedder")):
            raise ValueError(f"{key!r}: class-token and feature-conditioned MaskDiT variants are not supported")
        if name.startswith("decoder_layer."):
            name = "decoder_embed." + name.removeprefix("decoder_layer.")
        if name == _LABELS:
            value = value.t()
        out[name] = value.contiguous() if isinstance(value, torch.Tensor) else value
    return out


def maskdit_to_official(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The inverse of :func:`maskdit_from_official`: an mdtblocks MaskDiT state dict in the official layout."""
    out: dict[str, Tensor] = {}
    for name, value in state.items():
        if name.startswith("decoder_embed."):
            name = "decoder_layer." + name.removeprefix("decoder_embed.")
        if name == _LABELS:
            value = value.t().contiguous()
        out["model." + name] = value
    return out
