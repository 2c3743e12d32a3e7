"""Training-trajectory parity: 8 official training steps (MDTv2, MDT, DiT) replayed from recorded draws.

The fixtures (``fixtures/trajectory``, see its README) hold the initial weights, every
random draw, the per-step losses and gradient norms, and the final model and EMA
weights of the official trainers. Here the same draws go through mdtblocks' objective,
the recipes' ``--official`` optimizer, clipping and EMA, and :func:`optimizer_step`,
the step the training loop runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import rel_err
from safetensors import safe_open
from safetensors.torch import load_file
from training_utils import load_recipe

from mdtblocks import load_official
from mdtblocks.compat.official import convert_official_state_dict
from mdtblocks.diffusion import MaskedDiffusionObjective, StepRandomness, create_diffusion
from mdtblocks.training import make_ema, optimizer_step
from mdtblocks.training.precision import AutocastForward
from mdtblocks.training.recipe import build_optimizer, train_config

FIXTURES = Path(__file__).parent / "fixtures" / "trajectory"
RECIPES = {"mdtv2": "mdtv2_imagenet256", "mdtv1": "mdt_imagenet256", "dit": "dit_imagenet256"}
# Worst errors measured (fp32): see the README of the fixtures. Losses and gradient norms agree to ~1e-7 on
# every CPU tried. Weights depend on the CPU's matmul kernels: where a gradient element is near zero, its
# fp32 rounding decides the sign of Adam's normalised step, so the same code gives final weights within
# 1.9e-7 of the fixtures on the Intel machine that recorded them and 2.6e-6 on an AMD EPYC (change over
# 8 steps: 3.3e-6 and 2.5e-5). The bounds leave ~4x room over the worst machine; a 0.1% error in the
# learning rate, a dropped clip or a wrong EMA decay is still 10-1000x larger.
LOSS_TOL, GRAD_NORM_TOL, WEIGHT_TOL, DELTA_TOL, KEY_BIAS_GAP = 1e-6, 1e-6, 1e-5, 1e-4, 1e-5


def read_fixture(family: str) -> tuple[dict[str, torch.Tensor], dict]:
    path = FIXTURES / f"{family}_trajectory.safetensors"
    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()["meta"])
    return load_file(str(path)), meta


def section(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) + 1 :]: v.float() if v.is_floating_point() else v for k, v in tensors.items() if k.startswith(prefix + ".")}


def replay(family: str, fixture: dict[str, torch.Tensor], meta: dict, masked_draws: str = "independent"):
    """Run the recorded steps through mdtblocks; returns (model, emas, losses, grad norms)."""
    cfg, _ = load_recipe(RECIPES[family]).RECIPE.configure(["--official", "--data", "unused", "--lr", str(meta["lr"])])
    loop = train_config(cfg)
    model = load_official(section(fixture, "init"), **({"decode_layer": 2} if family == "mdtv1" else {}),
                          **({"num_heads": meta["config"]["num_heads"]} if family == "dit" else {})).train()
    objective = MaskedDiffusionObjective(
        create_diffusion("", "linear", 1000, learn_sigma=True, snr_gamma=cfg.snr_gamma), masked_draws=masked_draws
    )
    optimizer = build_optimizer(cfg, [p for p in model.parameters() if p.requires_grad])
    rates = meta["ema_rates"]
    assert rates[0] == loop.ema_decay == 0.9999
    emas = [(make_ema(model), rate) for rate in rates]
    null = model.config.num_classes
    denoiser = AutocastForward(model, torch.device("cpu"), loop.precision)
    losses, norms = [], []
    for s in range(meta["steps"]):
        plan = None
        if "mask_noise" in fixture:
            u = float(fixture["mask_ratio_draw"][s]) if "mask_ratio_draw" in fixture else 0.0
            plan = model.mask_sampler.plan_from_draws(fixture["mask_noise"][s], u)
        randomness = StepRandomness(
            t=fixture["t"][s], noise=fixture["noise"][s], drop_label=fixture["drop"][s].bool(), mask=plan,
            null_class=null,
            masked_noise=fixture["noise_masked"][s] if plan is not None else None,
            masked_drop_label=fixture["drop_masked"][s].bool() if plan is not None else None,
        )
        terms, norm = optimizer_step(
            denoiser, model, emas, objective, optimizer, fixture["x"][s], fixture["y"][s], randomness,
            micro=meta["batch"], accum=1, grad_clip=loop.grad_clip, ema_decay=loop.ema_decay,
        )
        losses.append(terms)
        norms.append(norm)
    return model, [e for e, _ in emas], losses, torch.stack(norms)


def official_state(fixture: dict[str, torch.Tensor], prefix: str, model) -> dict[str, torch.Tensor]:
    family = "dit" if type(model).__name__ == "DiT" else ("mdtv2" if model.config.long_skip else "mdtv1")
    return convert_official_state_dict(section(fixture, prefix), model.config, family)


def without_key_bias(name: str, value: torch.Tensor) -> torch.Tensor:
    """``value`` without the key third of an attention ``qkv.bias``.

    The key bias adds the same ``q . b_k`` to every logit of a query, which softmax
    ignores: its true gradient is zero, and its fp32 gradient is rounding noise (~1e-9)
    whose sign and size depend on the order of summation. Adam and Adan turn that noise
    into updates of ~1e-8 that no reimplementation reproduces; :func:`key_bias_gap`
    bounds them in absolute terms instead.
    """
    if not name.endswith("qkv.bias"):
        return value
    q, _, v = value.chunk(3)
    return torch.cat([q, v])


def key_bias_gap(ours: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> float:
    """Largest absolute difference of the key biases."""
    gaps = [float((ours[k].detach().chunk(3)[1] - r.chunk(3)[1]).abs().max()) for k, r in ref.items() if k.endswith("qkv.bias")]
    return max(gaps)


def worst(
    ours: dict[str, torch.Tensor],
    ref: dict[str, torch.Tensor],
    init: dict[str, torch.Tensor] | None = None,
    trained: set[str] | None = None,
) -> float:
    """Worst relative error over tensors (key biases aside).

    With ``init``: of the change from ``init``, over the ``trained`` parameters (a frozen
    one, DiT's position table, does not change in mdtblocks' EMA, while the official
    ``mul_(decay).add_(p, 1 - decay)`` moves it by an ulp).
    """
    errs = []
    for k, r in ref.items():
        o, r = without_key_bias(k, ours[k].detach()), without_key_bias(k, r)
        if init is not None:
            if k not in trained:
                continue
            start = without_key_bias(k, init[k])
            o, r = o - start, r - start
        errs.append(rel_err(o, r))
    return max(errs)


@pytest.fixture(scope="module", params=["mdtv2", "mdtv1", "dit"])
def replayed(request):
    fixture, meta = read_fixture(request.param)
    return request.param, fixture, meta, replay(request.param, fixture, meta)


def test_per_step_losses_and_grad_norms_match_the_official_trainer(replayed):
    family, fixture, meta, (_, _, losses, norms) = replayed
    ours = torch.stack([t["loss"] for t in losses])
    assert rel_err(ours, fixture["loss"]) < LOSS_TOL
    assert float(((ours - fixture["loss"]).abs() / fixture["loss"].abs()).max()) < LOSS_TOL
    if family != "dit":
        for name in ("loss_unmasked", "loss_masked"):
            part = torch.stack([t[name] for t in losses])
            assert float(((part - fixture[name]).abs() / fixture[name].abs()).max()) < LOSS_TOL, name
    assert float(((norms - fixture["grad_norm"]).abs() / fixture["grad_norm"]).max()) < GRAD_NORM_TOL


def test_final_model_and_ema_weights_match_the_official_trainer(replayed):
    family, fixture, meta, (model, emas, _, _) = replayed
    init = official_state(fixture, "init", model)
    final = official_state(fixture, "final", model)
    ours = model.state_dict()
    trained = {name for name, p in model.named_parameters() if p.requires_grad}
    assert worst(ours, final) < WEIGHT_TOL
    assert key_bias_gap(ours, final) < KEY_BIAS_GAP
    # The change over 8 steps, which a wrong update would alter even where it is small next to the weights.
    assert worst(ours, final, init, trained) < DELTA_TOL
    for ema, rate in zip(emas, meta["ema_rates"]):
        ref = official_state(fixture, f"ema_{rate}", model)
        assert worst(ema.state_dict(), ref) < WEIGHT_TOL, rate
        assert key_bias_gap(ema.state_dict(), ref) < KEY_BIAS_GAP, rate
        if rate < 0.999:  # EMA 0.9999 moves by ~1e-7 in 8 steps, below what fp32 weights resolve
            assert worst(ema.state_dict(), ref, init, trained) < DELTA_TOL, rate


def test_mdtv2_clipping_is_exercised_by_the_fixture():
    fixture, _ = read_fixture("mdtv2")
    assert (fixture["grad_norm"] > 1).any() and (fixture["grad_norm"] < 1).any()


@pytest.mark.parametrize("family", ["mdtv2", "mdtv1"])
def test_shared_draws_are_not_the_official_protocol(family):
    """The default (shared noise and drops) gives a different trajectory: the fixtures tell the protocols apart."""
    fixture, meta = read_fixture(family)
    losses = replay(family, fixture, meta, masked_draws="shared")[2]
    ours = torch.stack([t["loss"] for t in losses])
    assert rel_err(ours, fixture["loss"]) > 1e-3
