"""REPA parity: our DiT + feature tap + projector + RepaLoss against REPA's SiT and ``SILoss`` on recorded draws.

The fixtures (``fixtures/repa``, see its README) hold a tiny SiT's weights, the injected
times, noise and encoder features, and what REPA computed: the model output, the tokens
of block ``encoder_depth``, the projector outputs, the per-sample denoising loss and the
projection loss (per sample and over the batch). REPA's SiT is the DiT network with the
projectors attached, so its weights load into :class:`~mdtblocks.DiT` (``learn_sigma``
off) and :class:`~mdtblocks.alignment.RepaLoss` by name. ``repa_heldout`` is a second,
independent draw checked by its own test.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import rel_err
from safetensors import safe_open
from safetensors.torch import load_file

from mdtblocks import DiT
from mdtblocks.alignment import FeatureTap, RepaLoss
from mdtblocks.models.config import DiTConfig

FIXTURES = Path(__file__).parent / "fixtures" / "repa"
# Worst errors measured (fp32, both sets): model output 1.1e-7 relative, tapped tokens 1.7e-8, projector
# outputs 1.3e-7; denoising loss 2.4e-7 absolute (losses ~2), projection loss 1.5e-8 absolute. A missing
# normalisation, a wrong projector layer or the wrong block is 1e-2 or more.
REL_TOL, LOSS_TOL = 2e-6, 1e-6


def load(name: str) -> tuple[dict[str, torch.Tensor], dict]:
    path = FIXTURES / f"repa_{name}.safetensors"
    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()["meta"])
    return load_file(str(path)), meta


def build(fixture: dict[str, torch.Tensor], meta: dict) -> tuple[DiT, RepaLoss]:
    """Our DiT and RepaLoss with the recorded SiT weights (``projectors.0.*`` -> ``projector.layers.*``)."""
    c = meta["config"]
    config = DiTConfig(
        input_size=c["input_size"], patch_size=c["patch_size"], in_channels=c["in_channels"], hidden_size=c["hidden_size"],
        depth=c["depth"], num_heads=c["num_heads"], mlp_ratio=c["mlp_ratio"], num_classes=c["num_classes"],
        class_dropout_prob=c["class_dropout_prob"], learn_sigma=False,
    )
    weights = {k[len("weights."):]: v for k, v in fixture.items() if k.startswith("weights.")}
    model = DiT(config)
    model.load_state_dict({k: v for k, v in weights.items() if not k.startswith("projectors.")}, strict=True)
    loss = RepaLoss(c["hidden_size"], c["z_dims"][0], coeff=1.0, projector_dim=c["projector_dim"])
    loss.load_state_dict({k.replace("projectors.0.", "projector.layers."): v for k, v in weights.items() if k.startswith("projectors.0.")})
    return model.eval(), loss


def worst_errors(name: str) -> dict[str, float]:
    fixture, meta = load(name)
    model, loss = build(fixture, meta)
    t, x, noise, zs = fixture["t"], fixture["x"], fixture["noise"], fixture["zs"]
    # REPA's time: 0 is data. x_t = (1 - t) x + t eps and the velocity target eps - x (its linear path). Our
    # flow objective runs SiT's convention (0 is noise); the network is fed the same numbers here.
    x_t = (1 - t).view(-1, 1, 1, 1) * x + t.view(-1, 1, 1, 1) * noise
    with FeatureTap(model, meta["config"]["encoder_depth"]) as tap, torch.no_grad():
        out = model(x_t, t, fixture["y"])
        tokens = tap.pop()
        projected = loss.projector(tokens)
        proj = loss(tokens, zs)
    denoising = (out - (noise - x)).square().mean(dim=(1, 2, 3))
    return {
        "x_t": rel_err(x_t, fixture["x_t"]),
        "model_output": rel_err(out, fixture["model_output"]),
        "tapped": rel_err(tokens, fixture["tapped"]),
        "projector_output": rel_err(projected, fixture["zs_tilde"]),
        "denoising_loss": float((denoising - fixture["denoising_loss"]).abs().max()),
        "proj_loss": float((proj - fixture["proj_loss"]).abs().max()),
        "proj_loss_batch": abs(float(proj.mean() - fixture["proj_loss_batch"][0])),
    }


def check(errors: dict[str, float]) -> None:
    for key in ("x_t", "model_output", "tapped", "projector_output"):
        assert errors[key] < REL_TOL, (key, errors)
    for key in ("denoising_loss", "proj_loss", "proj_loss_batch"):
        assert errors[key] < LOSS_TOL, (key, errors)


def test_repa_main_set() -> None:
    check(worst_errors("main"))


def test_repa_heldout_set() -> None:
    check(worst_errors("heldout"))


def test_fixture_provenance() -> None:
    _, meta = load("main")
    assert meta["repo"] == "sihyun-yu/REPA" and len(meta["commit"]) == 40
    assert meta["config"]["encoder_depth"] < meta["config"]["depth"]


@pytest.mark.parametrize("coeff", [0.5, 2.0])
def test_coefficient_scales_the_recorded_loss(coeff: float) -> None:
    fixture, meta = load("main")
    _, unit = build(fixture, meta)
    scaled = RepaLoss(meta["config"]["hidden_size"], meta["config"]["z_dims"][0], coeff=coeff, projector_dim=meta["config"]["projector_dim"])
    scaled.load_state_dict(unit.state_dict())
    tokens = fixture["tapped"]
    with torch.no_grad():
        torch.testing.assert_close(scaled(tokens, fixture["zs"]), coeff * fixture["proj_loss"], rtol=0, atol=2 * LOSS_TOL)
