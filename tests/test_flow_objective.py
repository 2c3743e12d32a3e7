"""The flow-matching objective: path properties (Hypothesis), the Objective contract, records, guidance, bad input."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mdtblocks import FlowMatching, SiT, TransportSampler, create_transport, load_official
from mdtblocks.objectives import Objective, objective_from_record
from mdtblocks.objectives.flow import (
    PATHS,
    FlowGuidance,
    bits_per_dim,
    draw_training_times,
    make_path,
    shift_times,
    sit_eps,
    time_grid,
)

times = st.floats(0.02, 0.98)


def _t(value: float) -> torch.Tensor:
    return torch.tensor([value], dtype=torch.float64)


@pytest.mark.parametrize("name", sorted(PATHS))
def test_path_ends(name):
    path = make_path(name)
    a1, s1 = path.alpha(_t(1.0))[0], path.sigma(_t(1.0))[0]
    assert float(a1) == pytest.approx(1.0) and float(s1) == pytest.approx(0.0, abs=1e-12)
    a0, s0 = path.alpha(_t(0.0))[0], path.sigma(_t(0.0))[0]
    # Linear and GVP reach pure noise at t=0; VP's alpha_0 = exp(-(20 - 0.1)/4 - 0.1/2) is small but not 0.
    expected = math.exp(-(20 - 0.1) / 4 - 0.05) if name == "VP" else 0.0
    assert float(a0) == pytest.approx(expected, abs=1e-12)
    assert float(s0) == pytest.approx(math.sqrt(1 - expected**2), abs=1e-12)


@settings(max_examples=30, deadline=None)
@given(t=times, seed=st.integers(0, 2**16))
@pytest.mark.parametrize("name", sorted(PATHS))
def test_velocity_target_is_the_time_derivative_of_the_path(name, t, seed):
    path = make_path(name)
    g = torch.Generator().manual_seed(seed)
    x0, x1 = (torch.randn(1, 2, 2, 2, generator=g, dtype=torch.float64) for _ in range(2))
    a, da = path.alpha(_t(t))
    s, ds = path.sigma(_t(t))
    assert torch.allclose(path.velocity_target(_t(t), x0, x1), da * x1 + ds * x0)
    h = 1e-6
    fd = (path.interpolate(_t(t + h), x0, x1) - path.interpolate(_t(t - h), x0, x1)) / (2 * h)
    assert torch.allclose(path.velocity_target(_t(t), x0, x1), fd, atol=1e-6, rtol=1e-6)
    if name != "Linear":  # GVP and VP preserve variance
        assert float(a[0] ** 2 + s[0] ** 2) == pytest.approx(1.0)


@settings(max_examples=30, deadline=None)
@given(t=times, seed=st.integers(0, 2**16))
@pytest.mark.parametrize("name", sorted(PATHS))
def test_prediction_conversions_invert_each_other(name, t, seed):
    path = make_path(name)
    g = torch.Generator().manual_seed(seed)
    x, score = (torch.randn(1, 2, 2, 2, generator=g, dtype=torch.float64) for _ in range(2))
    v = path.velocity_from_score(score, x, _t(t))
    assert torch.allclose(path.score_from_velocity(v, x, _t(t)), score, atol=1e-8, rtol=1e-6)
    sigma = path.sigma(_t(t))[0]
    assert torch.allclose(path.noise_from_velocity(v, x, _t(t)), -sigma * score, atol=1e-8, rtol=1e-6)


def test_objective_contract_and_record():
    objective = FlowMatching("GVP", "noise", "likelihood", time_sampler="logit_normal", logit_mean=0.3, logit_scale=0.8)
    assert isinstance(objective, Objective) and objective.kind == "flow"
    record = json.loads(json.dumps(objective.to_record()))
    assert record["kind"] == "flow" and objective_from_record(record) == objective
    assert (objective.train_eps, objective.sample_eps) == (1e-3, 1e-3)
    t = objective.draw_times(1000, torch.Generator().manual_seed(0))
    assert t.shape == (1000,) and 1e-3 <= float(t.min()) and float(t.max()) <= 1 - 1e-3
    assert torch.equal(t, objective.draw_times(1000, torch.Generator().manual_seed(0)))
    # logit-normal with mean 0.3 on the logit: the median is sigmoid(0.3) mapped into [t0, t1].
    assert float(t.median()) == pytest.approx(1e-3 + (1 - 2e-3) / (1 + math.exp(-0.3)), abs=0.03)
    assert torch.equal(objective.data_fraction(t), t)
    with pytest.raises(ValueError, match="unknown flow-matching options"):
        objective_from_record({**record, "sigma": 1})


def test_losses_with_cosine_term_and_variance_channels():
    x1 = torch.randn(2, 4, 4, 4)
    x0 = torch.randn(2, 4, 4, 4)
    t = torch.tensor([0.2, 0.7])
    objective = FlowMatching(cosine_weight=0.5)
    target = objective.interpolant.velocity_target(t, x0, x1)

    def exact(x, tt, **kw):  # the target, plus variance channels a learn_sigma backbone would add
        return torch.cat([target, torch.full_like(target, 9.0)], dim=1)

    terms = objective.losses(exact, x1, t, x0, {})
    assert torch.allclose(terms["loss"], torch.zeros(2), atol=1e-6)
    terms = objective.losses(lambda x, tt, **kw: -target, x1, t, x0, {})
    assert torch.allclose(terms["cosine"], torch.full((2,), 2.0))
    assert torch.allclose(terms["loss"], terms["mse"] + 0.5 * terms["cosine"])


def test_time_shift_and_grid():
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    shifted = shift_times(t, 3.0)
    assert shifted[0] == 0 and shifted[-1] == 1 and bool((shifted[1:] > shifted[:-1]).all())
    assert bool((shifted[1:-1] < t[1:-1]).all())  # more steps near noise
    assert torch.equal(shift_times(t, None), t)
    assert float(shift_times(torch.tensor([0.5]), 3.0)) == pytest.approx(1 - 1.5 / 2)


def test_interval_guidance():
    def model(x, t, y):
        return torch.where(y.view(-1, 1, 1, 1) < 4, 1.0, 0.0).expand_as(x).clone()

    x = torch.zeros(4, 4, 2, 2)
    y = torch.tensor([1, 2, 4, 4])
    guided = FlowGuidance(model, 3.0, interval=(0.2, 0.6), guided_channels=3)
    inside = guided(x, torch.full((4,), 0.4), y)
    outside = guided(x, torch.full((4,), 0.8), y)
    assert torch.all(inside[:, :3] == 3.0) and torch.all(outside[:, :3] == 1.0)
    assert torch.equal(inside[:2, 3], torch.ones(2, 2, 2)) and torch.equal(inside[2:, 3], torch.zeros(2, 2, 2))


def test_sampler_callback_and_determinism():
    objective = FlowMatching()
    net = lambda x, t, **kw: -x  # noqa: E731
    x = torch.randn(2, 4, 2, 2)
    seen = []
    objective.sample(net, x, {}, sampler="heun", num_steps=4, callback=lambda info: seen.append(float(info["t"])))
    assert seen == pytest.approx([0.25, 0.5, 0.75, 1.0])
    runs = [
        objective.sample(net, x, {}, sampler="sde_euler", num_steps=5, generator=torch.Generator().manual_seed(1))
        for _ in range(2)
    ]
    assert torch.equal(*runs)


def test_bits_per_dim():
    assert float(bits_per_dim(torch.tensor([-math.log(2.0) * 12]), 4)) == pytest.approx(3.0)


def test_sit_eps_quirks():
    assert sit_eps("Linear", "velocity", 0.1, 0.2) == (0.0, 0.0)  # SiT ignores eps for Linear/GVP velocity
    assert sit_eps("VP", "velocity", None, 0.5) == (1e-5, 1e-3)  # sample_eps defaults when train_eps is missing
    assert sit_eps("GVP", "score", 0.01, 0.02) == (0.01, 0.02)
    with pytest.raises(ValueError, match="sample_eps"):
        sit_eps("VP", "velocity", 1e-4, None)


def test_sit_preset_and_checkpoint_family():
    model = SiT.from_preset("SiT-S/8", input_size=16, num_classes=3, depth=1)
    x, t, y = torch.randn(2, 4, 16, 16), torch.tensor([0.0, 1.0]), torch.tensor([0, 2])
    assert model(x, t, y).shape == (2, 4, 16, 16) and model.config.learn_sigma
    state = model.state_dict()
    loaded = load_official(state, family="sit")
    assert type(loaded) is SiT and torch.equal(loaded(x, t, y), model.eval()(x, t, y))
    assert type(load_official(state)).__name__ == "DiT"  # the keys alone say DiT
    with pytest.raises(ValueError, match="keys are those of 'dit'"):
        load_official(state, family="mdtv2")
    with pytest.raises(ValueError, match="unknown family"):
        load_official(state, family="sot")


def test_sit_training_checkpoint_file(tmp_path):
    """SiT's train.py saves {"model", "ema", "opt", "args"}; the EMA weights load, nothing is unpickled as code."""
    import argparse

    model = SiT.from_preset("SiT-S/8", input_size=16, num_classes=3, depth=1)
    ema = {k: v + 1.0 if k.endswith("bias") else v for k, v in model.state_dict().items()}
    path = tmp_path / "0001000.pt"
    torch.save({"model": model.state_dict(), "ema": ema, "opt": {"state": {}, "param_groups": []},
                "args": argparse.Namespace(model="SiT-S/8", path_type="Linear")}, path)  # fmt: skip
    loaded = load_official(path, family="sit")
    assert all(torch.equal(loaded.state_dict()[k], ema[k]) for k in ema)


# --- bad input ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"path": "Cosine"}, "unknown path 'Cosine'"),
        ({"prediction": "x0"}, "unknown prediction 'x0'"),
        ({"prediction": "score", "loss_weight": "snr"}, "unknown loss weight 'snr'"),
        ({"loss_weight": "velocity"}, "velocity is unweighted"),
        ({"time_sampler": "beta"}, "unknown time sampler 'beta'"),
        ({"prediction": "noise", "cosine_weight": 1.0}, "needs prediction='velocity'"),
        ({"train_eps": 0.7}, r"train_eps must lie in \[0, 0.5\)"),
        ({"logit_scale": 0.0}, "logit_scale must be positive"),
    ],
)
def test_bad_objective_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FlowMatching(**kwargs)


def test_bad_compat_and_sampler_input():
    with pytest.raises(ValueError, match="unknown path_type 'linear'"):
        create_transport("linear")
    with pytest.raises(ValueError, match="unknown prediction 'v'"):
        create_transport(prediction="v")
    tr = create_transport()
    x = torch.randn(2, 4, 2, 2)
    net = lambda x, t, **kw: x  # noqa: E731
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1\].*1.5"):
        tr.training_losses(net, x, t=torch.tensor([0.5, 1.5]))
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1\]"):
        tr.training_losses(net, x, t=torch.tensor([-0.1, 0.5]))
    sampler = TransportSampler(tr)
    with pytest.raises(ValueError, match="unknown ODE sampling_method 'rk45'"):
        sampler.sample_ode(sampling_method="rk45")
    with pytest.raises(ValueError, match="unknown SDE method 'Milstein'"):
        sampler.sample_sde(sampling_method="Milstein", num_steps=3)(x, net)
    with pytest.raises(TypeError, match="Transport"):  # under the suite's jaxtyping hook its own message answers
        TransportSampler(FlowMatching())
    objective = FlowMatching()
    with pytest.raises(ValueError, match="unknown flow sampler 'ddim'"):
        objective.sample(net, x, {}, sampler="ddim", num_steps=4)
    with pytest.raises(ValueError, match="unknown diffusion form 'cubic'"):
        objective.sample(net, x, {}, sampler="sde_euler", num_steps=4, diffusion_form="cubic")
    with pytest.raises(ValueError, match="unknown last step 'Median'"):
        objective.sample(net, x, {}, sampler="sde_euler", num_steps=4, last_step="Median")
    with pytest.raises(ValueError, match="unknown SDE noise form"):
        objective.sample(net, x, {}, sampler="sde_euler", num_steps=4, noise_form="both")
    with pytest.raises(ValueError, match="time shift must be a positive number"):
        objective.sample(net, x, {}, sampler="euler", num_steps=4, shift=-1.0)
    with pytest.raises(ValueError, match="at least 2 points"):
        time_grid(0.0, 1.0, 1)
    with pytest.raises(ValueError, match="unknown time sampler"):
        draw_training_times(3, torch.Generator(), t0=0.0, t1=1.0, sampler="gamma")


def test_bad_guidance_interval():
    net = lambda x, t, y: x  # noqa: E731
    with pytest.raises(ValueError, match=r"guidance interval \(0.8, 0.2\) is reversed"):
        FlowGuidance(net, 2.0, interval=(0.8, 0.2))
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        FlowGuidance(net, 2.0, interval=(0.2, 1.2))
    with pytest.raises((TypeError, ValueError), match="interval"):  # ValueError "a pair" without the hook
        FlowGuidance(net, 2.0, interval=(0.2,))
