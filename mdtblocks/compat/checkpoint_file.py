"""Reading official ``.pt`` checkpoints without executing pickled code."""

from __future__ import annotations

import argparse
import os
import pickle
import zipfile
from pathlib import Path

import torch
from jaxtyping import Shaped
from torch import Tensor

__all__ = ["read_state_dict"]

# Wrappers the official trainers put around the weights; the EMA copy is what they evaluate.
_NESTED_KEYS = ("ema", "model", "state_dict", "module")


def read_state_dict(source: str | os.PathLike | dict[str, object]) -> dict[str, Shaped[Tensor, "..."]]:
    """Return a flat ``name -> tensor`` dict from a checkpoint path or an in-memory state dict.

    Files are read with ``torch.load(weights_only=True)``: a pickle that would import or
    call anything beyond tensors and containers is refused before it runs. Training
    checkpoints of the form ``{"model": ..., "ema": ..., "opt": ..., "args": ...}`` (DiT's
    ``train.py``) give their EMA weights. A DDP ``module.`` prefix is removed.

    Args:
        source: a checkpoint file path, or a state dict already in memory.

    Returns:
        Parameter and buffer name -> tensor, each of its own shape and dtype.
    """
    if isinstance(source, dict):
        state = source
        where = "the given state dict"
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        where = str(path)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {path} does not exist")
        try:
            with torch.serialization.safe_globals([argparse.Namespace]):
                state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            raise ValueError(
                f"refused to load {path}: it is not a plain tensor checkpoint (its pickle would run code). Details: {err}"
            ) from None
        except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as err:
            raise ValueError(f"cannot read checkpoint {path}: the file is truncated or corrupt ({err})") from None
    else:
        raise TypeError(f"expected a checkpoint path or a state dict, got {type(source).__name__}")
    if not isinstance(state, dict):
        raise ValueError(f"{where} holds a {type(state).__name__}, expected a dict of tensors")
    for key in _NESTED_KEYS:
        if key in state and isinstance(state[key], dict) and not isinstance(state.get("pos_embed"), Tensor):
            state = state[key]
            break
    out = {}
    for name, value in state.items():
        if not isinstance(value, Tensor):
            raise ValueError(f"{where}: entry {name!r} is a {type(value).__name__}, expected a tensor")
        out[name.removeprefix("module.").removeprefix("_orig_mod.")] = value
    return out
