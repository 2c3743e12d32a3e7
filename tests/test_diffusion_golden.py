"""Golden numbers for the diffusion math, against an independent float64 NumPy reference.

Covers what the official fixtures do not: fixed (large and small) variance, x0 and v
prediction, other channel counts and sizes, the decoder term at t = 0.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mdtblocks import create_diffusion
from mdtblocks.diffusion import space_timesteps
from tests.conftest import rel_err


class Ref:
    """The DDPM / improved-DDPM equations written out in NumPy (Ho et al. 2020; Nichol & Dhariwal 2021)."""

    def __init__(self, kept, steps=1000):
        betas = np.linspace(1e-4 * 1000 / steps, 0.02 * 1000 / steps, steps)
        ab_full = np.cumprod(1 - betas)
        self.ab = ab_full[kept]
        self.ab_prev = np.concatenate([[1.0], self.ab[:-1]])
        self.beta = 1 - self.ab / self.ab_prev
        self.post_var = self.beta * (1 - self.ab_prev) / (1 - self.ab)

    def col(self, arr, t):
        return arr[t].reshape(-1, 1, 1, 1)

    def pmv(self, out, x, t, variance, predict="epsilon"):
        c = x.shape[1]
        ab, ab_prev, beta = self.col(self.ab, t), self.col(self.ab_prev, t), self.col(self.beta, t)
        clipped = self.post_var.copy()
        clipped[0] = self.post_var[1]
        if variance == "learned_range":
            pred, v = out[:, :c], out[:, c:]
            frac = (v + 1) / 2
            log_var = frac * np.log(beta) + (1 - frac) * np.log(self.col(clipped, t))
        else:
            pred = out
            table = np.concatenate([[self.post_var[1]], self.beta[1:]]) if variance == "fixed_large" else clipped
            log_var = np.log(self.col(table, t)) + 0 * x
        if predict == "epsilon":
            x0 = (x - np.sqrt(1 - ab) * pred) / np.sqrt(ab)
        elif predict == "x0":
            x0 = pred
        else:
            x0 = np.sqrt(ab) * x - np.sqrt(1 - ab) * pred
        mean = (beta * np.sqrt(ab_prev) * x0 + (1 - ab_prev) * np.sqrt(1 - beta) * x) / (1 - ab)
        var = np.exp(log_var)
        if variance == "fixed_small":
            var = self.col(self.post_var, t) + 0 * x
        return mean, var, log_var, x0


def case(seed, b, c, s, out_c):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((b, c, s, s))
    out = rng.standard_normal((b, out_c, s, s))
    if out_c == 2 * c:
        out[:, c:] = rng.uniform(-1, 1, (b, c, s, s))
    return x, out


@pytest.mark.parametrize("variance", ["learned_range", "fixed_large", "fixed_small"])
@pytest.mark.parametrize("predict", ["epsilon", "x0", "v"])
@pytest.mark.parametrize("respacing", ["50", "", "ddim25"])
def test_p_mean_variance_golden(variance, predict, respacing):
    kept = space_timesteps(1000, respacing or "1000")
    learned = variance == "learned_range"
    d = create_diffusion(respacing, learn_sigma=learned, sigma_small=variance == "fixed_small", predict=predict)
    b, c = 4, 3
    x, out = case(1, b, c, 6, 2 * c if learned else c)
    t = np.array([0, 1, len(kept) // 2, len(kept) - 1])
    mean, var, log_var, x0 = Ref(kept).pmv(out, x, t, variance, predict)
    got = d.p_mean_variance(
        lambda *a, **k: torch.from_numpy(out).float(),
        torch.from_numpy(x).float(),
        torch.from_numpy(t),
        clip_denoised=False,
    )
    for name, ref in (("mean", mean), ("variance", var), ("log_variance", log_var), ("pred_xstart", x0)):
        assert got[name].shape == x.shape
        assert rel_err(got[name], torch.from_numpy(ref)) < 1e-5, name


@pytest.mark.parametrize("predict, gamma", [("epsilon", None), ("epsilon", 5.0), ("x0", 5.0), ("v", 5.0), ("v", None)])
def test_fixed_variance_training_loss_golden(predict, gamma):
    d = create_diffusion(learn_sigma=False, predict=predict, snr_gamma=gamma)
    b, c = 3, 2
    x0, out = case(2, b, c, 5, c)
    noise = np.random.default_rng(3).standard_normal(x0.shape)
    t = np.array([0, 400, 999])
    ab = Ref(list(range(1000))).col(Ref(list(range(1000))).ab, t)
    xt = np.sqrt(ab) * x0 + np.sqrt(1 - ab) * noise
    seen = {}

    def model(x, tt, **kwargs):
        seen["x"] = x
        return torch.from_numpy(out).float()

    terms = d.training_losses(
        model, torch.from_numpy(x0).float(), torch.from_numpy(t), noise=torch.from_numpy(noise).float()
    )
    assert set(terms) == {"loss", "mse"}
    assert rel_err(seen["x"], torch.from_numpy(xt)) < 1e-6
    target = {"epsilon": noise, "x0": x0, "v": np.sqrt(ab) * noise - np.sqrt(1 - ab) * x0}[predict]
    mse = ((target - out) ** 2).mean(axis=(1, 2, 3))
    if gamma is not None:
        snr = (ab / (1 - ab)).ravel()
        mse = mse * np.minimum(snr, gamma) / {"epsilon": snr, "x0": 1.0, "v": snr + 1}[predict]
    assert rel_err(terms["mse"], torch.from_numpy(mse)) < 1e-5
    torch.testing.assert_close(terms["loss"], terms["mse"])


def test_learned_variance_vb_golden_including_decoder_term():
    # At t = 0 the vb term is the discretised Gaussian NLL of x0; elsewhere KL(posterior || model).
    d = create_diffusion()
    b, c = 3, 2
    x0, out = case(4, b, c, 4, 2 * c)
    x0 = np.clip(x0, -1, 1)
    noise = np.random.default_rng(5).standard_normal(x0.shape)
    t = np.array([0, 10, 700])
    ref = Ref(list(range(1000)))
    ab = ref.col(ref.ab, t)
    xt = np.sqrt(ab) * x0 + np.sqrt(1 - ab) * noise
    mean, _, log_var, _ = ref.pmv(out, xt, t, "learned_range")
    beta, ab_prev = ref.col(ref.beta, t), ref.col(ref.ab_prev, t)
    true_mean = (beta * np.sqrt(ab_prev) * x0 + (1 - ab_prev) * np.sqrt(1 - beta) * xt) / (1 - ab)
    clipped = ref.post_var.copy()
    clipped[0] = ref.post_var[1]
    true_log_var = np.log(ref.col(clipped, t)) + 0 * x0
    kl = 0.5 * (
        -1 + log_var - true_log_var + np.exp(true_log_var - log_var) + (true_mean - mean) ** 2 * np.exp(-log_var)
    )
    kl = kl.mean(axis=(1, 2, 3)) / math.log(2)

    def cdf(v):
        return 0.5 * (1 + np.tanh(np.sqrt(2 / np.pi) * (v + 0.044715 * v**3)))

    inv = np.exp(-0.5 * log_var)
    hi, lo = cdf(inv * (x0 - mean + 1 / 255)), cdf(inv * (x0 - mean - 1 / 255))
    logp = np.where(
        x0 < -0.999,
        np.log(np.maximum(hi, 1e-12)),
        np.where(x0 > 0.999, np.log(np.maximum(1 - lo, 1e-12)), np.log(np.maximum(hi - lo, 1e-12))),
    )
    nll = -logp.mean(axis=(1, 2, 3)) / math.log(2)
    expected_vb = np.where(t == 0, nll, kl)
    terms = d.training_losses(
        lambda *a, **k: torch.from_numpy(out).float(),
        torch.from_numpy(x0).float(),
        torch.from_numpy(t),
        noise=torch.from_numpy(noise).float(),
    )
    assert rel_err(terms["vb"], torch.from_numpy(expected_vb)) < 1e-4
    torch.testing.assert_close(terms["loss"], terms["mse"] + terms["vb"])


def test_schedule_and_respacing_golden_numbers():
    d = create_diffusion()
    assert float(d.alphas_cumprod[-1]) == pytest.approx(4.0358e-5, rel=1e-3)
    assert float(d.betas[0]) == pytest.approx(1e-4) and float(d.betas[-1]) == pytest.approx(0.02)
    cos = create_diffusion(noise_schedule="cosine")
    assert float(cos.betas[-1]) == pytest.approx(0.999)
    assert space_timesteps(1000, "ddim50")[:3] == [0, 20, 40]
    assert space_timesteps(300, "10,15,20")[:3] == [0, 11, 22]
    assert space_timesteps(1000, "250")[:4] == [0, 4, 8, 12] and space_timesteps(1000, "250")[-1] == 999
    d250 = create_diffusion("250")
    assert d250.num_timesteps == 250 and d250.original_num_steps == 1000
    assert d250.use_timesteps == set(space_timesteps(1000, "250"))
    assert create_diffusion("ddim50").original_num_steps == 1000
    assert create_diffusion(250).use_timesteps == d250.use_timesteps


def test_bpd_loop_terms_and_prior():
    # A perfect model at every step: the bound is finite, the prior term matches its closed form,
    # and with an exact x0 estimate the per-step mse vanishes.
    d = create_diffusion("20", learn_sigma=False, sigma_small=True)
    x0 = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(0)) * 2 - 1
    ab = d.alphas_cumprod.float()

    def oracle(x, t, **kwargs):
        i = torch.searchsorted(d.timestep_map, t)
        a = ab[i].sqrt().view(-1, 1, 1, 1)
        return (x - a * x0) / (1 - ab[i]).sqrt().view(-1, 1, 1, 1)

    out = d.calc_bpd_loop(oracle, x0, clip_denoised=False, generator=torch.Generator().manual_seed(1))
    assert out["vb"].shape == (2, 20) and out["mse"].shape == (2, 20)
    assert torch.isfinite(out["total_bpd"]).all()
    assert float(out["xstart_mse"].max()) < 1e-8
    # With the true x0 and the posterior variance every KL term is 0; only the decoder term
    # (step 0, the last column in the official order) remains.
    assert float(out["vb"][:, :-1].abs().max()) < 1e-4
    assert float(out["vb"][:, -1].abs().min()) > 1e-4
    ab_last = float(d.alphas_cumprod[-1])
    mean, var = ab_last**0.5 * x0.double(), 1 - ab_last
    prior = (0.5 * (-1 - math.log(var) + var + mean**2)).mean(dim=(1, 2, 3)) / math.log(2)
    torch.testing.assert_close(out["prior_bpd"].double(), prior, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(out["total_bpd"], out["vb"].sum(1) + out["prior_bpd"])


def test_kl_and_rescaled_loss_types():
    x0 = torch.rand(2, 2, 4, 4, generator=torch.Generator().manual_seed(0)) * 2 - 1
    out = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(1))
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([3, 60])
    model = lambda *a, **k: out  # noqa: E731
    base = create_diffusion("100").training_losses(model, x0, t, noise=noise)
    kl = create_diffusion("100", use_kl=True).training_losses(model, x0, t, noise=noise)
    assert set(kl) == {"loss"}
    torch.testing.assert_close(kl["loss"], base["vb"] * 100)  # the vb term of the bound, times T
    rescaled = create_diffusion("100", rescale_learned_sigmas=True).training_losses(model, x0, t, noise=noise)
    torch.testing.assert_close(rescaled["vb"], base["vb"] * 0.1)  # T / 1000
    torch.testing.assert_close(rescaled["mse"], base["mse"])


def test_raw_learned_log_variance():
    from mdtblocks.diffusion import GaussianDiffusion, linear_betas

    d = GaussianDiffusion(linear_betas(1000), variance_type="learned")
    x = torch.randn(2, 3, 4, 4)
    log_var = torch.full((2, 3, 4, 4), -3.0)
    out = d.p_mean_variance(lambda *a, **k: torch.cat([torch.zeros_like(x), log_var], 1), x, torch.tensor([5, 500]))
    torch.testing.assert_close(out["log_variance"], log_var)
    torch.testing.assert_close(out["variance"], log_var.exp())
