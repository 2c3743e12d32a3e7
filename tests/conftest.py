"""Shared test fixtures: the conformance data (official outputs on random weights)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

CONFORMANCE = Path(__file__).parent / "fixtures" / "conformance"
# Per-family keyword arguments that the weights cannot tell (DiT width 64 is not a preset width).
OFFICIAL_KWARGS = {"mdtv2": {}, "mdtv1": {"decode_layer": 2}, "dit": {"num_heads": 4}}


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """Relative L2 error ||ours - ref|| / ||ref||, of tensors of the same shape (no broadcasting)."""
    assert ours.shape == ref.shape, f"shapes differ: ours {tuple(ours.shape)}, reference {tuple(ref.shape)}"
    return float((ours.double() - ref.double()).norm() / ref.double().norm())


@pytest.fixture(scope="session")
def conformance_inputs() -> dict[str, torch.Tensor]:
    return load_file(str(CONFORMANCE / "inputs.safetensors"))


@pytest.fixture(scope="session")
def conformance_reference():
    def get(arch: str) -> dict[str, torch.Tensor]:
        return load_file(str(CONFORMANCE / f"{arch}_reference.safetensors"))

    return get


@pytest.fixture(scope="session")
def official_model():
    from mdtblocks import load_official

    cache: dict[str, torch.nn.Module] = {}

    def get(arch: str):
        if arch not in cache:
            cache[arch] = load_official(CONFORMANCE / f"{arch}_official.pt", **OFFICIAL_KWARGS[arch])
        return cache[arch]

    return get
