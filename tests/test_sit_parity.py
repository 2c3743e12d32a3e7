"""SiT parity: willisma/SiT's transport and model, recorded with injected draws, reproduced through mdtblocks.

The fixtures (``fixtures/sit``, see its README) hold a tiny SiT with random weights, the
inputs, every injected draw (``t`` and ``x0`` of the loss, the SDE's Brownian increments,
the likelihood's Hutchinson probe) and SiT's results. They are checked through the
compatibility layer (SiT's names and signatures) and through the native objective.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import rel_err_rows
from safetensors.torch import load_file

from mdtblocks import FlowMatching, SiT, TransportSampler, create_transport, load_official
from mdtblocks.objectives.flow import FlowGuidance, ode_sample, time_grid

FIXTURES = Path(__file__).parent / "fixtures" / "sit"
MANIFEST = json.loads((FIXTURES / "sit_manifest.json").read_text())
# Worst errors measured (fp32, relative L2 per sample): see fixtures/sit/README.md.
# Fixed-step samplers agree to ~1e-7; dopri5 (SiT's tolerances atol 1e-6, rtol 1e-3) amplifies the model's
# ~1e-7 rounding differences through its adaptive steps to ~1e-5, so it gets a wider bound. A wrong
# coefficient, time or noise scale gives 1e-3 or more.
MODEL_TOL, LOSS_TOL, STEP_TOL, DOPRI5_TOL = 2e-6, 2e-6, 2e-6, 1e-4


@pytest.fixture(scope="module")
def ref() -> dict[str, torch.Tensor]:
    return load_file(FIXTURES / "sit_reference.safetensors")


@pytest.fixture(scope="module")
def model() -> SiT:
    return load_official(load_file(FIXTURES / "sit_weights.safetensors"), family="sit", num_heads=2)


def _guided(model: SiT, case: dict) -> tuple:
    if "cfg" in case:
        return FlowGuidance(model, case["cfg"], guided_channels=3), 2
    return model, 1


def _queue(draws: torch.Tensor):
    items = list(draws)

    def draw(x: torch.Tensor) -> torch.Tensor:
        return items.pop(0)

    draw.left = items
    return draw


def test_model_forward(model, ref):
    assert type(model) is SiT and model.config.learn_sigma
    with torch.no_grad():
        out = model(ref["x1"], ref["t"], ref["y"])
        x2, t2 = torch.cat([ref["x1"], ref["x1"]]), torch.cat([ref["t"], ref["t"]])
        cfg = FlowGuidance(model, 4.0, guided_channels=3)(x2, t2, ref["y_cfg"])
    assert rel_err_rows(out, ref["model_out"]) < MODEL_TOL
    assert rel_err_rows(cfg, ref["model_out_cfg"]) < MODEL_TOL


@pytest.mark.parametrize("case", MANIFEST["losses"], ids=lambda c: c["key"])
def test_losses(model, ref, case):
    tr = create_transport(case["path"], case["prediction"], case["loss_weight"])
    assert (tr.objective.train_eps, tr.objective.sample_eps) == (case["train_eps"], case["sample_eps"])
    with torch.no_grad():
        terms = tr.training_losses(model, ref["x1"], {"y": ref["y"]}, t=ref["t"], x0=ref["x0"])
    assert terms["loss"].shape == (ref["x1"].shape[0],)
    assert rel_err_rows(terms["loss"][:, None], ref[case["key"]][:, None]) < LOSS_TOL


@pytest.mark.parametrize("case", MANIFEST["ode"], ids=lambda c: c["key"])
def test_ode(model, ref, case):
    net, k = _guided(model, case)
    start = ref["x1"] if case.get("reverse") else ref["x0"]
    start, y = torch.cat([start] * k), ref["y_cfg"] if k == 2 else ref["y"]
    sampler = TransportSampler(create_transport(case["path"], case["prediction"]))
    fn = sampler.sample_ode(sampling_method=case["method"], num_steps=case["num_steps"], reverse=case.get("reverse", False))
    with torch.no_grad():
        out = fn(start, net, y=y)
    assert out.shape[0] == case["num_steps"]
    tol = DOPRI5_TOL if case["method"] == "dopri5" else STEP_TOL
    assert rel_err_rows(out[-1], ref[case["key"]]) < tol
    # The native samplers on the same grid (torchdiffeq's heun2 is the native "heun").
    native = {"euler": "euler", "heun2": "heun", "dopri5": "dopri5"}[case["method"]]
    objective = FlowMatching(case["path"], case["prediction"])
    t0, t1 = objective.interval(eval=True)
    if case.get("reverse"):
        t0, t1 = 1 - t0, 1 - t1
    with torch.no_grad():
        mine = ode_sample(objective.velocity(net), start, time_grid(t0, t1, case["num_steps"]), method=native,
                          model_kwargs={"y": y})  # fmt: skip
    assert rel_err_rows(mine, ref[case["key"]]) < tol


@pytest.mark.parametrize("case", MANIFEST["sde"], ids=lambda c: c["key"])
def test_sde(model, ref, case):
    net, k = _guided(model, case)
    start, y = torch.cat([ref["x0"]] * k), ref["y_cfg"] if k == 2 else ref["y"]
    sampler = TransportSampler(create_transport(case["path"], case["prediction"]))
    draws = _queue(ref[case["key"] + ".dw"])
    fn = sampler.sample_sde(sampling_method=case["method"], diffusion_form=case["form"], diffusion_norm=case.get("norm", 1.0),
                            last_step=case["last_step"], last_step_size=case["last_step_size"], num_steps=case["num_steps"],
                            brownian=draws)  # fmt: skip
    with torch.no_grad():
        out = fn(start, net, y=y)
    assert len(out) == case["num_steps"] and not draws.left
    assert rel_err_rows(out[-1], ref[case["key"]]) < STEP_TOL
    # The native entry point: num_steps counts steps, SiT's counts grid points.
    if case["form"] == "inccreasing-decreasing" or case["last_step"] is None:
        return
    draws = _queue(ref[case["key"] + ".dw"])
    with torch.no_grad():
        mine = FlowMatching(case["path"], case["prediction"]).sample(
            net, start, {"y": y}, sampler="sde_" + case["method"].lower(), num_steps=case["num_steps"] - 1,
            diffusion_form=case["form"], diffusion_norm=case.get("norm", 1.0), last_step=case["last_step"],
            last_step_size=case["last_step_size"], brownian=draws,
        )  # fmt: skip
    assert rel_err_rows(mine, ref[case["key"]]) < STEP_TOL


@pytest.mark.parametrize("case", MANIFEST["likelihood"], ids=lambda c: c["key"])
def test_likelihood(model, ref, case):
    probe = ref[case["key"] + ".probe_bits"] * 2 - 1
    sampler = TransportSampler(create_transport(case["path"], case["prediction"]))
    fn = sampler.sample_ode_likelihood(sampling_method=case["method"], num_steps=case["num_steps"], probe=lambda x: probe)
    logp, latent = fn(ref["x1"], model, y=ref["y"])
    tol = DOPRI5_TOL if case["method"] == "dopri5" else STEP_TOL
    assert rel_err_rows(logp[:, None], ref[case["key"] + ".logp"][:, None]) < tol
    assert rel_err_rows(latent, ref[case["key"] + ".latent"]) < tol
