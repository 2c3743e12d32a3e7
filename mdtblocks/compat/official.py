"""Load official MDT (sail-sg/MDT branch mdtv1), MDTv2 (branch main), DiT and SiT checkpoints.

The architecture and every size the weights determine are read off the tensors;
the rest comes from keyword arguments. Keys are renamed to mdtblocks' layout:

===========================  ===================================
official                     mdtblocks
===========================  ===================================
``blocks.i`` (MDT v1)        ``encoder.i`` / ``decoder.(i-enc)``
``en_inblocks.i``            ``encoder.i``
``en_outblocks.i``           ``encoder.(half+i)``
``de_blocks.i``              ``decoder.i``
``sideblocks.i``             ``side_interpolater.blocks.i``
``mask_token``               ``side_interpolater.mask_token``
``*.relative_position_index``  (dropped; recomputed, and checked)
===========================  ===================================
"""

from __future__ import annotations

import math
import os
import re
from typing import Any

import torch
from jaxtyping import Shaped
from torch import Tensor

from ..blocks import relative_position_index
from ..models import DiT, DiTConfig, MaskedDiffusionTransformer, MDTConfig, SiT
from ..models.config import config_from_dict
from .checkpoint_file import read_state_dict

__all__ = ["load_official", "detect_family", "convert_official_state_dict"]

# Official DiT widths -> heads (DiT-S/B/L/XL); other widths need num_heads=...
_DIT_HEADS = {384: 6, 768: 12, 1024: 16, 1152: 16}


def detect_family(state: dict[str, Shaped[Tensor, "..."]]) -> str:
    """``"mdtv2"``, ``"mdtv1"`` or ``"dit"``, from the key layout."""
    # MDTv2 is recognised by any of its own parts: with depth - decode_layer < 2 it has no
    # encoder blocks, but its decoder blocks still carry the dense-shortcut skip_linear.
    if any(k.startswith(("en_inblocks.", "en_outblocks.", "de_blocks.")) or ".skip_linear." in k for k in state):
        return "mdtv2"
    if any(k.startswith("sideblocks.") for k in state) or any("rel_pos_bias" in k for k in state):
        return "mdtv1"
    if any(k.startswith("blocks.") for k in state):
        return "dit"
    raise ValueError("not an official MDT, MDTv2 or DiT checkpoint: no 'blocks.*', 'en_inblocks.*' or 'sideblocks.*' keys")


def _count(state: dict[str, Tensor], prefix: str) -> int:
    pat = re.compile(rf"^{re.escape(prefix)}\.(\d+)\.")
    idx = {int(m.group(1)) for k in state if (m := pat.match(k))}
    if idx and idx != set(range(len(idx))):
        raise ValueError(f"checkpoint has non-contiguous '{prefix}.*' block indices {sorted(idx)}")
    return len(idx)


def _need(state: dict[str, Tensor], key: str) -> Tensor:
    if key not in state:
        raise ValueError(f"checkpoint is missing the key {key!r}")
    return state[key]


def _mlp_ratio(width: int, d: int) -> float:
    """A ratio that rebuilds an MLP of exactly ``width`` (blocks use ``int(d * ratio)``, as the official code)."""
    ratio = width / d
    return ratio if int(d * ratio) == width else (width + 0.5) / d


def _infer(state: dict[str, Tensor], family: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    proj = _need(state, "x_embedder.proj.weight")
    d, c_in, p = proj.shape[0], proj.shape[1], proj.shape[2]
    n = _need(state, "pos_embed").shape[1]
    side = math.isqrt(n)
    if side * side != n:
        raise ValueError(f"pos_embed has {n} tokens, not a square grid")
    out = _need(state, "final_layer.linear.weight").shape[0] // (p * p)
    if out not in (c_in, 2 * c_in):
        raise ValueError(f"final layer emits {out} channels for {c_in} input channels; expected {c_in} or {2 * c_in}")
    rows = _need(state, "y_embedder.embedding_table.weight").shape[0]
    dropout = kwargs.get("class_dropout_prob", 0.1)
    fc1 = next((v for k, v in state.items() if k.endswith("mlp.fc1.weight")), None)
    inferred: dict[str, Any] = {
        "hidden_size": d,
        "in_channels": c_in,
        "patch_size": p,
        "input_size": side * p,
        "learn_sigma": out == 2 * c_in,
        "num_classes": rows - (1 if dropout > 0 else 0),
        "mlp_ratio": _mlp_ratio(fc1.shape[0], d) if fc1 is not None else kwargs.get("mlp_ratio", 4.0),
    }
    if family == "dit":
        inferred["depth"] = _count(state, "blocks")
        heads = kwargs.get("num_heads", _DIT_HEADS.get(d))
        if heads is None:
            raise ValueError(f"DiT width {d} is not a preset width {sorted(_DIT_HEADS)}; pass num_heads=...")
        inferred["num_heads"] = heads
        return inferred
    table = next((v for k, v in state.items() if k.endswith("relative_position_bias_table")), None)
    if table is None:
        raise ValueError("MDT checkpoint has no relative_position_bias_table")
    inferred["num_heads"] = table.shape[1]
    inferred["side_blocks"] = _count(state, "sideblocks")
    if family == "mdtv2":
        half_in, half_out, dec = _count(state, "en_inblocks"), _count(state, "en_outblocks"), _count(state, "de_blocks")
        if half_in != half_out:
            raise ValueError(f"MDTv2 checkpoint has {half_in} en_inblocks but {half_out} en_outblocks")
        inferred.update(depth=half_in + half_out + dec, decode_layer=dec, long_skip=True, dense_skip=True)
        inferred.setdefault("mask_ratio_range", 0.2)
    else:
        inferred.update(depth=_count(state, "blocks"), decode_layer=kwargs.get("decode_layer", 2))
    return inferred


def convert_official_state_dict(
    state: dict[str, Shaped[Tensor, "..."]], config: MDTConfig | DiTConfig, family: str
) -> dict[str, Shaped[Tensor, "..."]]:
    """Rename official keys to mdtblocks keys (see the module table); drop index buffers after checking them."""
    grid_index = relative_position_index(config.grid)
    enc = config.encoder_depth if isinstance(config, MDTConfig) else 0
    half = enc // 2
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if key.endswith("relative_position_index"):
            if value.shape != grid_index.shape or not torch.equal(value.to(grid_index.dtype), grid_index):
                raise ValueError(f"{key} does not match a {config.grid} patch grid")
            continue
        new = key
        if family == "mdtv1" and (m := re.match(r"^blocks\.(\d+)\.(.*)$", key)):
            i = int(m.group(1))
            new = f"encoder.{i}.{m.group(2)}" if i < enc else f"decoder.{i - enc}.{m.group(2)}"
        elif family == "mdtv2":
            new = re.sub(r"^en_inblocks\.(\d+)\.", lambda m: f"encoder.{m.group(1)}.", new)
            new = re.sub(r"^en_outblocks\.(\d+)\.", lambda m: f"encoder.{half + int(m.group(1))}.", new)
            new = re.sub(r"^de_blocks\.", "decoder.", new)
        if family != "dit":
            new = re.sub(r"^sideblocks\.", "side_interpolater.blocks.", new)
            new = "side_interpolater.mask_token" if new == "mask_token" else new
        out[new] = value
    return out


def load_official(
    source: str | os.PathLike | dict[str, object], *, family: str | None = None, **config: Any
) -> MaskedDiffusionTransformer | DiT:
    """Build the model an official checkpoint describes and load its weights exactly.

    Args:
        source: path of an official ``.pt`` file (sail-sg/MDT main = MDTv2, branch
            mdtv1 = MDT, facebookresearch/DiT including ``DiT-XL-2-256x256.pt``,
            willisma/SiT including ``SiT-XL-2-256x256.pt``), or its state dict. Read with
            ``weights_only=True``: code in a pickle is never run.
        family: ``"sit"`` builds a :class:`~mdtblocks.SiT` (SiT's weights have DiT's keys
            and shapes, so they cannot be told apart: say so); ``None`` detects
            ``"mdtv2"``, ``"mdtv1"`` or ``"dit"`` from the keys, and a given family must
            agree with them.
        **config: config fields the weights cannot tell: MDT v1's ``decode_layer``
            (default 2), DiT's ``num_heads`` for a non-preset width,
            ``class_dropout_prob`` (0 if the label table has no null row), the masking
            fields and ``attention_backend``. A value contradicting the weights raises.

    Returns:
        A :class:`~mdtblocks.MaskedDiffusionTransformer`, :class:`~mdtblocks.DiT` or
        :class:`~mdtblocks.SiT` in eval mode.

    Raises:
        ValueError: unreadable file, unknown layout, or missing, unexpected or
            mis-shaped keys (all named).
    """
    state = read_state_dict(source)
    detected = detect_family(state)
    if family is not None:
        if family not in ("mdtv2", "mdtv1", "dit", "sit"):
            raise ValueError(f"unknown family {family!r}; expected 'mdtv2', 'mdtv1', 'dit', 'sit' or None")
        if (detected, family) != ("dit", "sit") and detected != family:
            raise ValueError(f"family={family!r} but the checkpoint's keys are those of {detected!r}")
    sit = family == "sit"
    family = detected
    inferred = _infer(state, family, config)
    for key, value in config.items():
        if key == "mlp_ratio":
            agrees = int(inferred["hidden_size"] * value) == int(inferred["hidden_size"] * inferred["mlp_ratio"])
        else:
            agrees = key not in inferred or inferred[key] == value or key in ("decode_layer", "num_heads", "num_classes")
        if not agrees:
            raise ValueError(f"{key}={value!r} contradicts the checkpoint, whose weights say {key}={inferred[key]!r}")
    fields = {**inferred, **config}
    cls = (SiT if sit else DiT) if family == "dit" else MaskedDiffusionTransformer
    cfg = config_from_dict(cls.config_class, fields)
    model = cls(cfg)  # type: ignore[arg-type]
    converted = convert_official_state_dict(state, cfg, family)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(converted))
    unexpected = sorted(set(converted) - set(expected))
    shapes = [
        f"{k}: checkpoint {tuple(converted[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(expected) & set(converted))
        if converted[k].shape != expected[k].shape
    ]
    if missing or unexpected or shapes:
        raise ValueError(
            f"checkpoint does not fit {cls.__name__}({cfg}): missing keys {missing}, unexpected keys {unexpected}, "
            f"mis-shaped {shapes}"
        )
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in converted.items()}, strict=True)
    return model.eval()
