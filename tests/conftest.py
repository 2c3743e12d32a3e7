"""Shared test fixtures: the conformance data (official outputs on random weights), compile without shape checks."""

from __future__ import annotations

from pathlib import Path

import jaxtyping
import pytest
import torch
import torch._dynamo
import torch._dynamo.utils
from safetensors.torch import load_file

CONFORMANCE = Path(__file__).parent / "fixtures" / "conformance"
# Per-family keyword arguments that the weights cannot tell (DiT width 64 is not a preset width).
OFFICIAL_KWARGS = {"mdtv2": {}, "mdtv1": {"decode_layer": 2}, "dit": {"num_heads": 4}}


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """Relative L2 error ||ours - ref|| / ||ref||, of tensors of the same shape (no broadcasting)."""
    assert ours.shape == ref.shape, f"shapes differ: ours {tuple(ours.shape)}, reference {tuple(ref.shape)}"
    return float((ours.double() - ref.double()).norm() / ref.double().norm())


def rel_err_rows(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """Largest relative L2 error over the rows of axis 0 (the timestep / batch axis).

    One norm over the whole tensor lets a wrong row of small norm hide behind the large ones (the
    t=0 row of ``pmv_variance`` is 0.0016 against 5.3 for t=49), so each row is compared with its
    own reference row. A reference row that is exactly zero is compared absolutely.
    """
    assert ours.shape == ref.shape, f"shapes differ: ours {tuple(ours.shape)}, reference {tuple(ref.shape)}"
    assert ref.dim() >= 1 and ref.shape[0] > 0, f"need a leading row axis, got shape {tuple(ref.shape)}"
    diff = (ours.double() - ref.double()).reshape(ref.shape[0], -1).norm(dim=1)
    scale = ref.double().reshape(ref.shape[0], -1).norm(dim=1)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return float((diff / scale).max())


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


@pytest.fixture
def no_shape_checks():
    """The suite's jaxtyping hook wraps every call; users compile without it (checks stay out of compiled paths)."""
    jaxtyping.config.update("jaxtyping_disable", True)
    limit = torch._dynamo.config.recompile_limit
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    yield
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()  # graph counts are process-wide: leave none to other tests
    torch._dynamo.config.recompile_limit = limit
    jaxtyping.config.update("jaxtyping_disable", False)
