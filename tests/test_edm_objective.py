"""EDM as an objective: preconditioning identities, noise levels, the Heun sampler, the record, composition and bad input."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import inputs, tiny_dit, tiny_mdt
from hypothesis import given, settings
from hypothesis import strategies as st

from mdtblocks.objectives import EDMObjective, Objective, objective_from_record
from mdtblocks.objectives.edm import (
    ChurnOptions,
    EDMDenoiser,
    EDMPreconditioning,
    heun_sampler,
    karras_sigmas,
    log_normal_sigmas,
    sigma_ramp,
)
from mdtblocks.sampling import ClassifierFreeGuidance

SETTINGS = settings(max_examples=25, deadline=None)
levels = st.floats(1e-4, 1e3)


@SETTINGS
@given(sigma=levels, sigma_data=st.floats(0.05, 5.0))
def test_preconditioning_identities(sigma, sigma_data):
    pre = EDMPreconditioning(sigma_data)
    s = torch.tensor([sigma], dtype=torch.float64)
    k = pre.coefficients(s)
    d2 = sigma_data**2
    # unit-variance input: c_in^2 (sigma^2 + sigma_data^2) = 1
    assert float(k.c_in.flatten()[0] ** 2 * (sigma**2 + d2)) == pytest.approx(1.0, rel=1e-12)
    # unit-variance target: the loss weight is 1 / c_out^2
    assert float(pre.loss_weight(s)[0] * k.c_out.flatten()[0] ** 2) == pytest.approx(1.0, rel=1e-12)
    # the skip and output scalings split the signal: c_skip = sigma_data^2 c_in^2, c_out = sigma sigma_data c_in
    assert float(k.c_skip.flatten()[0]) == pytest.approx(d2 * float(k.c_in.flatten()[0]) ** 2, rel=1e-12)
    assert float(k.c_out.flatten()[0]) == pytest.approx(sigma * sigma_data * float(k.c_in.flatten()[0]), rel=1e-12)
    assert float(k.c_noise[0]) == pytest.approx(math.log(sigma) / 4, rel=1e-12, abs=1e-12)


def test_denoiser_tends_to_identity_at_zero_noise():
    pre = EDMPreconditioning()
    k = pre.coefficients(torch.tensor([1e-8], dtype=torch.float64))
    assert float(k.c_skip.flatten()[0]) == pytest.approx(1.0, abs=1e-12) and float(k.c_out.flatten()[0]) < 1e-7
    model = tiny_dit(learn_sigma=False)
    x = torch.randn(2, 3, 8, 8)
    y = torch.tensor([1, 5])
    with torch.no_grad():
        d_small = pre.denoise(model, x, torch.full((2,), 1e-6), y=y)
        d_large = pre.denoise(model, x, torch.full((2,), 50.0), y=y)
    torch.testing.assert_close(d_small, x, rtol=0, atol=1e-5)
    assert (d_large - x).abs().max() > 1e-2


def test_learned_variance_channels_are_ignored():
    pre, x, sigma = EDMPreconditioning(), torch.randn(2, 3, 4, 4), torch.tensor([0.3, 7.0])
    f = torch.randn(2, 3, 4, 4)
    plain = pre.denoise(lambda x_in, t, y: f, x, sigma, y=None)
    learned = pre.denoise(lambda x_in, t, y: torch.cat([f, 100 + torch.randn(2, 3, 4, 4)], 1), x, sigma, y=None)
    assert torch.equal(plain, learned)


@SETTINGS
@given(n=st.integers(2, 60), lo=st.floats(1e-4, 0.5), hi=st.floats(1.0, 200.0), rho=st.floats(1.0, 10.0))
def test_rho_schedule_and_its_ramp(n, lo, hi, rho):
    s = karras_sigmas(n, lo, hi, rho)
    assert s.shape == (n + 1,) and s.dtype == torch.float64 and s[-1] == 0
    assert float(s[0]) == pytest.approx(hi, rel=1e-9) and float(s[-2]) == pytest.approx(lo, rel=1e-9)
    assert bool((s[:-1] > s[1:]).all())
    ramp = sigma_ramp(s[:-1], lo, hi, rho)
    torch.testing.assert_close(ramp, torch.arange(n, dtype=torch.float64) / (n - 1), rtol=0, atol=1e-9)


@SETTINGS
@given(a=levels, b=levels)
def test_data_fraction_is_in_unit_interval_and_decreasing_in_sigma(a, b):
    objective = EDMObjective()
    f = objective.data_fraction(torch.tensor([a, b]))
    assert bool(((f >= 0) & (f <= 1)).all())
    if a < b:
        assert f[0] >= f[1]
    assert float(objective.data_fraction(torch.tensor([80.0, 1e4]))[0]) == 0.0
    assert float(objective.data_fraction(torch.tensor([0.002]))[0]) == pytest.approx(1.0)


def test_log_normal_sigmas_are_seeded_and_log_normal():
    a = log_normal_sigmas(20_000, -1.2, 1.2, torch.Generator().manual_seed(3))
    b = EDMObjective().draw_times(20_000, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert float(a.log().mean()) == pytest.approx(-1.2, abs=0.03) and float(a.log().std()) == pytest.approx(1.2, abs=0.03)


def test_record_round_trip_and_protocol():
    objective = EDMObjective(sigma_data=1.0, p_mean=-0.4, p_std=1.0, sigma_min=0.01, sigma_max=40.0, rho=5.0)
    assert isinstance(objective, Objective)
    record = objective.to_record()
    assert record["kind"] == "edm" and all(isinstance(v, float) for k, v in record.items() if k != "kind")
    assert objective_from_record(record) == objective
    assert objective_from_record({"kind": "edm"}) == EDMObjective()
    with pytest.raises(ValueError, match=r"unknown EDM objective fields \['sigma'\]"):
        objective_from_record({"kind": "edm", "sigma": 1.0})


def point_mass_net(x0: torch.Tensor, sigma_data: float = 0.5):
    """A backbone whose preconditioned denoiser returns ``x0`` exactly (the ideal denoiser of one point)."""

    def net(x_in, c_noise, y):
        sigma = (4 * c_noise.double()).exp().view(-1, 1, 1, 1)
        x = x_in.double() * (sigma**2 + sigma_data**2).sqrt()
        c_skip = sigma_data**2 / (sigma**2 + sigma_data**2)
        c_out = sigma * sigma_data / (sigma**2 + sigma_data**2).sqrt()
        return ((x0.double() - c_skip * x) / c_out).float()

    return net


@pytest.mark.parametrize("sampler", ["heun", "euler"])
def test_samplers_land_on_a_point_mass(sampler):
    # With D(x; sigma) = x0 the ODE's solution is x0 + sigma / sigma_max (x_T - x0): both steps are exact.
    x0 = torch.randn(2, 3, 8, 8)
    out = EDMObjective().sample(point_mass_net(x0), torch.randn(2, 3, 8, 8), {"y": torch.zeros(2, dtype=torch.long)},
                                sampler=sampler, num_steps=6)
    torch.testing.assert_close(out, x0, rtol=0, atol=1e-4)


def test_churn_draws_from_the_generator_and_only_when_asked():
    model = tiny_dit(learn_sigma=False)
    noise = torch.randn(2, 3, 8, 8)
    kw = {"y": torch.tensor([0, 3])}
    objective = EDMObjective()
    g = torch.Generator().manual_seed(0)
    state = g.get_state()
    plain = objective.sample(model, noise, kw, num_steps=4, generator=g)
    assert torch.equal(g.get_state(), state)  # no churn: nothing drawn
    a = objective.sample(model, noise, kw, num_steps=4, generator=torch.Generator().manual_seed(1), S_churn=10.0)
    b = objective.sample(model, noise, kw, num_steps=4, generator=torch.Generator().manual_seed(1), S_churn=10.0)
    assert torch.equal(a, b) and not torch.allclose(a, plain)
    steps = []
    objective.sample(model, noise, kw, num_steps=4, callback=steps.append)
    assert [s["i"] for s in steps] == [0, 1, 2, 3] and steps[-1]["sigma"] == pytest.approx(0.002)
    assert ChurnOptions(s_churn=40.0).gamma(1.0, 4) == pytest.approx(math.sqrt(2) - 1)
    assert ChurnOptions(s_churn=1.0, s_min=0.05, s_max=1.0).gamma(2.0, 4) == 0.0


def test_guided_sampling_with_a_scale_of_one_is_the_plain_sampler():
    model = tiny_dit(learn_sigma=False)
    noise, y = torch.randn(2, 3, 8, 8), torch.tensor([1, 2])
    objective = EDMObjective()
    plain = objective.sample(model, noise, {"y": y}, num_steps=3)
    guided = objective.sample(ClassifierFreeGuidance(model, 1.0), torch.cat([noise, noise]),
                              {"y": torch.cat([y, torch.full_like(y, 5)])}, num_steps=3)
    torch.testing.assert_close(guided[:2], plain, rtol=1e-5, atol=1e-5)
    strong = objective.sample(ClassifierFreeGuidance(model, 4.0), torch.cat([noise, noise]),
                              {"y": torch.cat([y, torch.full_like(y, 5)])}, num_steps=3)
    assert not torch.allclose(strong[:2], plain, atol=1e-3)


@pytest.mark.parametrize("family", ["dit_learned_sigma", "mdt_masked"])
def test_objective_composes_with_other_backbones(family):
    model = (tiny_dit(learn_sigma=True) if family == "dit_learned_sigma" else tiny_mdt(v2=True)).train()
    x, _, y = inputs(model)
    objective = EDMObjective()
    g = torch.Generator().manual_seed(0)
    kwargs = {"y": y}
    if family == "mdt_masked":
        kwargs["ids_keep"] = model.mask_sampler(2, model.num_tokens, generator=g).ids_keep
    terms = objective.losses(model, x, objective.draw_times(2, g), objective.draw_noise(x, g), kwargs)
    assert terms["loss"].shape == (2,) and bool(terms["loss"].isfinite().all())
    terms["loss"].mean().backward()
    model.eval()
    out = objective.sample(model, torch.randn(2, 3, 8, 8), {"y": y}, num_steps=2)
    assert out.shape == x.shape and bool(out.isfinite().all())


@pytest.fixture
def hooked(request) -> bool:
    """Whether the jaxtyping import hook instruments mdtblocks in this run (it answers first for shapes)."""
    return bool(request.config.getoption("jaxtyping_packages", default=None))


def own_error(hooked: bool, exc: type[Exception], message: str, param: str):
    """``pytest.raises`` for the library's message, or for the hook's naming ``param`` when the hook runs."""
    if hooked:
        return pytest.raises(TypeError, match=rf"(?s)parameter '{param}'")
    return pytest.raises(exc, match=message)


def test_bad_input(hooked):
    with pytest.raises(ValueError, match="sigma_min 80.0 must be below sigma_max 1.0"):
        EDMObjective(sigma_min=80.0, sigma_max=1.0)
    with pytest.raises(ValueError, match="EDMObjective.p_std must be positive, got -1.0"):
        EDMObjective(p_std=-1.0)
    with pytest.raises(ValueError, match="EDMObjective.rho must be a finite number, got nan"):
        EDMObjective(rho=float("nan"))
    with pytest.raises(ValueError, match="sigma_data must be a positive finite number, got 0.0"):
        EDMPreconditioning(0.0)
    with pytest.raises(ValueError, match="num_steps must be an int of at least 2, got 1"):
        karras_sigmas(1)
    model = tiny_dit(learn_sigma=False)
    objective = EDMObjective()
    noise, kw = torch.randn(2, 3, 8, 8), {"y": torch.tensor([0, 1])}
    with pytest.raises(ValueError, match=r"unknown EDM sampler 'ddim'; expected one of \('heun', 'euler'\)"):
        objective.sample(model, noise, kw, sampler="ddim", num_steps=3)
    with pytest.raises(ValueError, match=r"unknown EDM sampling options \['s_churn'\]"):
        objective.sample(model, noise, kw, num_steps=3, s_churn=1.0)
    with pytest.raises(ValueError, match="S_churn must be a non-negative number, got -1.0"):
        objective.sample(model, noise, kw, num_steps=3, S_churn=-1.0)
    with pytest.raises(ValueError, match="sigmas must decrease strictly to a final 0"):
        heun_sampler(EDMDenoiser(model), noise, torch.tensor([1.0, 2.0, 0.0]), kw)
    with own_error(hooked, ValueError, r"times \(sigma\) must have shape \(2,\), got \(3,\)", "times"):
        objective.losses(model, noise, torch.ones(3), noise, kw)
    with own_error(hooked, ValueError, r"noise has shape \(2, 2, 8, 8\) but x_start has \(2, 3, 8, 8\)", "noise"):
        objective.losses(model, noise, torch.ones(2), noise[:, :2], kw)
    with pytest.raises(ValueError, match="the network returned 3 channels for a 2-channel input; expected 2 or 4"):
        EDMPreconditioning().denoise(lambda x, t, y: torch.zeros(2, 3, 8, 8), torch.zeros(2, 2, 8, 8), torch.ones(2), y=None)
    with own_error(hooked, TypeError, "generator must be a torch.Generator, got int", "generator"):
        objective.draw_times(2, 0)  # type: ignore[arg-type]


def test_bad_input_messages_without_the_import_hook():
    """The library's own messages (under the hook, jaxtyping answers first for shapes and types)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    tests = ["tests/test_edm_objective.py::test_bad_input", "tests/test_maskdit_properties.py::test_bad_config_and_input"]
    cmd = [sys.executable, "-m", "pytest", *tests, "-q", "-o", "addopts=", "-p", "no:cacheprovider"]
    run = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and "2 passed" in run.stdout, run.stdout[-4000:] + run.stderr[-2000:]


def test_the_sampling_spec_takes_maskdits_levels_and_passes_churn_to_sample():
    from mdtblocks.masking.maskdit import MASKDIT_IMAGENET256_SAMPLING
    from mdtblocks.sampling import sample

    spec = EDMObjective.sampling
    # recipes/sample.py's default for an EDM run: MaskDiT's official evaluation, Heun on 40 levels
    assert (spec.default_sampler, spec.default_steps) == ("heun", MASKDIT_IMAGENET256_SAMPLING["num_steps"]) == ("heun", 40)
    assert [o.flag for o in spec.options] == ["--churn", "--churn-min", "--churn-max", "--churn-noise"]
    defaults = spec.keywords("heun", spec.defaults())
    assert defaults == {"S_churn": 0.0, "S_min": 0.0, "S_max": math.inf, "S_noise": 1.0}
    assert spec.keywords("euler", spec.defaults()) == defaults  # both samplers read the churn
    churned = spec.keywords("heun", {"churn": 10.0, "churn_min": 0.01, "churn_max": 50.0, "churn_noise": 1.007})
    assert churned == {"S_churn": 10.0, "S_min": 0.01, "S_max": 50.0, "S_noise": 1.007}
    model, y = tiny_dit(learn_sigma=False), torch.tensor([0, 3])

    def draw(**keywords):
        return sample(model, y, sampler="heun", num_steps=4, objective=EDMObjective(),
                      generator=torch.Generator().manual_seed(0), **keywords)

    plain = draw()
    assert torch.equal(draw(**defaults), plain)  # churn 0: the deterministic sampler
    assert torch.equal(draw(**churned), draw(**churned)) and not torch.allclose(draw(**churned), plain)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"churn": -1.0}, "--churn must be a finite non-negative number, got -1.0"),
        ({"churn": math.nan}, "--churn must be a finite non-negative number, got nan"),
        ({"churn_min": -0.5}, "--churn-min must be a finite non-negative number, got -0.5"),
        ({"churn_noise": math.inf}, "--churn-noise must be a finite non-negative number, got inf"),
        ({"churn_max": -2.0}, "--churn-max must be a finite non-negative number or none"),
        ({"churn_min": 2.0, "churn_max": 1.0}, "--churn-min 2.0 exceeds --churn-max 1.0"),
    ],
)
def test_the_sampling_spec_refuses_bad_churn(values, message):
    spec = EDMObjective.sampling
    given = {**spec.defaults(), **values}
    problems = spec.problems(given, given)
    assert len(problems) == 1 and problems[0].startswith(message), problems
    assert spec.problems(spec.defaults(), spec.defaults()) == []
    assert spec.problems({**spec.defaults(), "churn_min": 1.0, "churn_max": 1.0}, {"churn_min": 1.0}) == []
