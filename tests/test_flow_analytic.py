"""Flow matching on Gaussian data, where the exact velocity, score and noise are known in closed form.

For data ``x1 ~ N(mu, diag(var))`` and ``x_t = alpha_t x1 + sigma_t x0`` every marginal is
Gaussian, ``N(alpha mu, alpha^2 var + sigma^2)``, and the posterior means give the exact
fields. Samplers driven by them must reproduce the data's mean and variance, and the ODE
likelihood must equal the Gaussian log-density (the Jacobian is diagonal, so Hutchinson's
estimate is exact for any +-1 probe).
"""

from __future__ import annotations

import math

import pytest
import torch

from mdtblocks.objectives.flow import FlowMatching, make_path

SHAPE = (2, 2, 2)  # c, hh, ww: 8 independent dimensions
MU = torch.linspace(-1.5, 2.0, 8, dtype=torch.float64).view(SHAPE)
VAR = torch.linspace(0.2, 1.5, 8, dtype=torch.float64).view(SHAPE)


def exact_net(path_name: str, prediction: str):
    """The exact prediction of the objective for Gaussian data (x, t) -> velocity / score / noise."""
    path = make_path(path_name)

    def net(x: torch.Tensor, t: torch.Tensor, **kwargs) -> torch.Tensor:
        tt = t.view(-1, 1, 1, 1).to(x.dtype)
        a, da = path.alpha(tt)
        s, ds = path.sigma(tt)
        cov = a**2 * VAR + s**2
        r = (x - a * MU) / cov  # Cov_t^{-1} (x - m_t)
        if prediction == "score":
            return -r
        e0 = s * r  # E[x0 | x_t]
        if prediction == "noise":
            return e0
        e1 = MU + a * VAR * r  # E[x1 | x_t]
        return da * e1 + ds * e0

    return net


def check_moments(samples: torch.Tensor, tol_mean: float, tol_var: float) -> None:
    n = samples.shape[0]
    mean, var = samples.mean(0), samples.var(0)
    # Monte-Carlo error of n samples is sqrt(var / n) on the mean, var sqrt(2 / n) on the variance.
    assert (mean - MU).abs().max() < tol_mean + 4 * (VAR / n).sqrt().max(), (mean - MU).abs().max()
    assert ((var - VAR).abs() / VAR).max() < tol_var + 4 * math.sqrt(2 / n), ((var - VAR).abs() / VAR).max()
    flat = samples.reshape(n, -1)
    corr = torch.corrcoef(flat.T) - torch.eye(flat.shape[1], dtype=flat.dtype)
    assert corr.abs().max() < 5 / math.sqrt(n)


def noise(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn((n, *SHAPE), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize(
    ("path", "prediction", "sampler", "steps"),
    [
        ("Linear", "velocity", "euler", 200),
        ("Linear", "velocity", "heun", 40),
        ("Linear", "velocity", "dopri5", 1),
        ("GVP", "score", "heun", 60),
        ("VP", "noise", "heun", 100),
    ],
)
def test_ode_reproduces_the_gaussian(path, prediction, sampler, steps):
    objective = FlowMatching(path, prediction)
    out = objective.sample(exact_net(path, prediction), noise(4000), {}, sampler=sampler, num_steps=steps)
    check_moments(out, 0.02, 0.03)


def test_ode_is_a_transport_map_and_reverses():
    objective, net = FlowMatching(), exact_net("Linear", "velocity")
    x0 = noise(64, seed=1)
    x1 = objective.sample(net, x0, {}, sampler="dopri5", num_steps=1, atol=1e-10, rtol=1e-10)
    # For Gaussian data the flow is the affine map x0 -> mu + sqrt(var) x0.
    assert torch.allclose(x1, MU + VAR.sqrt() * x0, atol=1e-6)
    from mdtblocks.objectives.flow import ode_sample, time_grid

    back = ode_sample(objective.velocity(net), x1, time_grid(1.0, 0.0, 2), method="dopri5", atol=1e-10, rtol=1e-10)
    assert torch.allclose(back, x0, atol=1e-6)


@pytest.mark.parametrize(
    ("path", "prediction", "method", "form", "noise_form", "last_step"),
    [
        ("Linear", "velocity", "sde_euler", "sigma", "code", "Mean"),
        ("Linear", "velocity", "sde_euler", "sigma", "paper", "Mean"),
        ("Linear", "velocity", "sde_heun", "linear", "code", "Euler"),
        ("GVP", "score", "sde_euler", "SBDM", "code", "Tweedie"),
    ],
)
def test_sde_reproduces_the_gaussian(path, prediction, method, form, noise_form, last_step):
    objective = FlowMatching(path, prediction)
    g = torch.Generator().manual_seed(3)
    out = objective.sample(
        exact_net(path, prediction), noise(4000), {}, sampler=method, num_steps=250, generator=g,
        diffusion_form=form, noise_form=noise_form, last_step=last_step, last_step_size=0.01,
    )  # fmt: skip
    check_moments(out, 0.03, 0.06)


def test_sde_noise_forms_differ_but_agree_in_law():
    """The paper's form is not the code's: the same increments give other paths (SiT issue #14)."""
    objective, net = FlowMatching(), exact_net("Linear", "velocity")
    x0 = noise(8)
    runs = []
    for form in ("code", "paper"):
        g = torch.Generator().manual_seed(5)
        runs.append(objective.sample(net, x0, {}, sampler="sde_euler", num_steps=20, generator=g, noise_form=form))
    assert (runs[0] - runs[1]).abs().max() > 1e-3


@pytest.mark.parametrize(("path", "prediction"), [("Linear", "velocity"), ("GVP", "velocity"), ("VP", "score")])
def test_likelihood_equals_the_gaussian_log_density(path, prediction):
    objective = FlowMatching(path, prediction)
    x = MU + VAR.sqrt() * noise(16, seed=7)
    probe = torch.ones_like(x)
    probe[::2] = -1
    result = objective.likelihood(exact_net(path, prediction), x, method="dopri5", atol=1e-9, rtol=1e-9, probe=lambda y: probe)
    exact = (-0.5 * ((x - MU) ** 2 / VAR + torch.log(2 * math.pi * VAR))).sum(dim=(1, 2, 3))
    # Linear and GVP integrate to t=0 exactly; VP stops at sample_eps and its t=0 is not quite N(0, I).
    tol = 1e-5 if path != "VP" else 2e-2
    assert (result.logp - exact).abs().max() < tol * exact.abs().max()


@pytest.mark.parametrize(("sampler", "steps"), [("heun", 30), ("sde_euler", 250)])
def test_shifted_grids_still_reproduce_the_gaussian(sampler, steps):
    objective = FlowMatching()
    g = torch.Generator().manual_seed(11)
    out = objective.sample(exact_net("Linear", "velocity"), noise(4000), {}, sampler=sampler, num_steps=steps, shift=3.0,
                           generator=g, last_step_size=0.01)  # fmt: skip
    check_moments(out, 0.03, 0.06)
