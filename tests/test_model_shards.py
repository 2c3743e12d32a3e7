"""Weights above max_shard_size are written as shards with an index, and load back exactly."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import tiny_dit

from mdtblocks import DiT
from mdtblocks.models.shards import parse_size


def test_sharded_save_loads_back_exactly_and_replaces_the_single_file(tmp_path):
    model = tiny_dit()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    total = sum(p.numel() * p.element_size() for p in model.state_dict().values())
    model.save_pretrained(tmp_path, max_shard_size=total // 3)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) >= 3 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    assert index["metadata"]["total_size"] == total and set(index["weight_map"]) == set(model.state_dict())
    assert not (tmp_path / "model.safetensors").exists()  # one layout per folder
    again = DiT.from_pretrained(tmp_path)
    for key, value in model.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key
    model.save_pretrained(tmp_path)  # back below the limit: the shards and the index go
    assert (tmp_path / "model.safetensors").is_file() and not (tmp_path / "model.safetensors.index.json").exists()
    assert not list(tmp_path.glob("model-*-of-*.safetensors"))


def test_a_missing_shard_is_named(tmp_path):
    model = tiny_dit()
    model.save_pretrained(tmp_path, max_shard_size="20KB")
    victim = sorted(tmp_path.glob("model-*.safetensors"))[1]
    victim.unlink()
    with pytest.raises(FileNotFoundError, match=victim.name):
        DiT.from_pretrained(tmp_path)


@pytest.mark.parametrize(("text", "value"), [("10GB", 10**10), ("500MB", 5 * 10**8), ("2GiB", 2 * 2**30), ("1.5kb", 1500), (64, 64)])
def test_sizes_parse_like_hugging_face(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("bad", ["ten GB", "-5MB", "5XB", 0])
def test_bad_sizes_are_refused_with_the_value(bad):
    with pytest.raises(ValueError, match=repr(bad) if isinstance(bad, str) else "positive"):
        parse_size(bad)
