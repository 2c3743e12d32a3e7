"""TREAD parity: a routed DiT forward equals the official CompVis/tread DiT's with the same injected routes.

The fixtures (tests/fixtures/tread/README.md) hold the official model's weights, inputs, the
injected kept-token ids of each route and the official routed and plain outputs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import rel_err
from safetensors.torch import load_file

from mdtblocks import DiT, load_official
from mdtblocks.masking.route import route_from_ids_keep

FIXTURES = Path(__file__).parent / "fixtures" / "tread"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())
TOLERANCE = 1e-5  # relative L2; the worst case reached is ~1e-7 (float32 summation order)


@pytest.fixture(scope="module")
def tensors() -> dict[str, torch.Tensor]:
    return load_file(str(FIXTURES / "tread_routed.safetensors"))


def case(tensors: dict[str, torch.Tensor], name: str):
    meta = MANIFEST["configs"][name]
    prefix = f"{name}.state."
    state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    model = load_official(state, num_heads=meta["config"]["num_heads"])
    assert isinstance(model, DiT)
    # The official routes: end_layer_idx is the last routed block (inclusive); ours is exclusive.
    routes = [
        route_from_ids_keep(r["start_layer_idx"], r["end_layer_idx"] + 1, tensors[f"{name}.ids_keep.{i}"], meta["tokens"])
        for i, r in enumerate(meta["routes"])
    ]
    x, t, y = (tensors[f"{name}.{k}"] for k in "xty")
    return model, routes, x, t, y


@pytest.mark.parametrize("name", sorted(MANIFEST["configs"]))
def test_routed_forward_matches_the_official(tensors, name):
    model, routes, x, t, y = case(tensors, name)
    with torch.no_grad():
        routed = model(x, t, y, route=routes if len(routes) > 1 else routes[0])
        plain = model(x, t, y)
    assert rel_err(routed, tensors[f"{name}.routed"]) < TOLERANCE
    assert rel_err(plain, tensors[f"{name}.plain"]) < TOLERANCE
    # the routes change the output: the comparison above is not the plain forward's twice
    assert rel_err(routed, plain) > 1e-3
