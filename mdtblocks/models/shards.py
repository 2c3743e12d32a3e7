"""Weights files above a size split into shards with an index, in the Hugging Face layout.

``model.safetensors`` below ``max_shard_size``; above it ``model-00001-of-00003.safetensors``,
... and ``model.safetensors.index.json`` (``{"metadata": {"total_size": ...},
"weight_map": {tensor name: shard file}}``), the layout ``transformers`` and ``diffusers``
write and read. Shards are written first and the index last, each atomically, so a folder
with an index is complete; the other layout's files are removed afterwards.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..io import atomic_write, write_json

__all__ = ["DEFAULT_MAX_SHARD_SIZE", "parse_size", "write_weights", "read_weights"]

DEFAULT_MAX_SHARD_SIZE = "10GB"
"""diffusers' default: an XL model (2.7 GB in fp32) stays one file."""

_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_size(size: int | str) -> int:
    """Bytes of ``size``: an int, or a string such as ``"10GB"``, ``"500MB"``, ``"2GiB"``."""
    if isinstance(size, bool) or not isinstance(size, (int, str)):
        raise TypeError(f"max_shard_size must be an int (bytes) or a string like '10GB', got {size!r}")
    if isinstance(size, int):
        value = size
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?I?B)\s*", size.upper())
        if match is None:
            raise ValueError(f"max_shard_size {size!r} is not a size like '10GB', '500MB' or '2GiB'")
        value = int(float(match.group(1)) * _UNITS[match.group(2)])
    if value <= 0:
        raise ValueError(f"max_shard_size must be positive, got {size!r}")
    return value


def _index_name(weights_name: str) -> str:
    return f"{weights_name}.index.json"


def _shard_names(weights_name: str, n: int) -> list[str]:
    stem, _, ext = weights_name.rpartition(".")
    return [f"{stem}-{i + 1:05d}-of-{n:05d}.{ext}" for i in range(n)]


def write_weights(directory: Path, state: dict[str, torch.Tensor], weights_name: str, max_shard_size: int | str) -> list[str]:
    """Write ``state`` as one file or as shards of at most ``max_shard_size`` bytes; returns the files written."""
    limit = parse_size(max_shard_size)
    groups: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, value in state.items():
        nbytes = value.numel() * value.element_size()
        if groups[-1] and size + nbytes > limit:  # a tensor larger than the limit gets a shard of its own
            groups.append({})
            size = 0
        groups[-1][key] = value
        size += nbytes
    index = directory / _index_name(weights_name)
    if len(groups) == 1:
        atomic_write(directory / weights_name, lambda p: save_file(state, str(p), metadata={"format": "pt"}))
        old_shards = json.loads(index.read_text())["weight_map"].values() if index.is_file() else ()
        index.unlink(missing_ok=True)
        for name in set(old_shards):
            (directory / name).unlink(missing_ok=True)
        return [weights_name]
    names = _shard_names(weights_name, len(groups))
    for name, group in zip(names, groups):
        atomic_write(directory / name, lambda p, g=group: save_file(g, str(p), metadata={"format": "pt"}))
    total = sum(v.numel() * v.element_size() for v in state.values())
    weight_map = {key: name for name, group in zip(names, groups) for key in group}
    write_json(index, {"metadata": {"total_size": total}, "weight_map": weight_map})
    (directory / weights_name).unlink(missing_ok=True)
    return [*names, index.name]


def read_weights(directory: Path, weights_name: str) -> dict[str, torch.Tensor]:
    """The tensors of ``weights_name`` in ``directory``: the single file, or the shards its index names."""
    index = directory / _index_name(weights_name)
    single = directory / weights_name
    if not index.is_file():
        if not single.is_file():
            raise FileNotFoundError(f"{single} does not exist (nor a sharded {index.name})")
        return _load(single)
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{index} is not a shard index (a JSON object with a 'weight_map'): {err}") from None
    state: dict[str, torch.Tensor] = {}
    for name in sorted(set(weight_map.values())):
        shard = _load(directory / name)
        state.update(shard)
    missing = sorted(set(weight_map) - set(state))
    if missing:
        raise ValueError(f"{index} names tensors its shards do not hold: {missing[:5]}")
    return state


def _load(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist") from None
    except Exception as err:  # safetensors raises its own error types
        raise ValueError(f"cannot read weights from {path}: {err}") from err
