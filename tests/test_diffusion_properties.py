"""Property tests of the diffusion math (Hypothesis): schedules, respacing, conversions, weights, DDIM."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mdtblocks import create_diffusion
from mdtblocks.diffusion import PREDICTIONS, SCHEDULES, min_snr_weight, named_betas, space_timesteps

FAST = settings(max_examples=25, deadline=None)


@FAST
@given(name=st.sampled_from(SCHEDULES), steps=st.integers(2, 2000))
def test_alpha_bar_strictly_decreasing_in_unit_interval(name, steps):
    if name == "linear":
        steps = max(steps, 21)  # below 20 steps the linear betas exceed 1 (rejected, see the validation tests)
    ab = torch.cumprod(1 - named_betas(name, steps), 0)
    assert ab.dtype == torch.float64
    assert bool((ab > 0).all() and (ab < 1).all())
    assert bool((ab[1:] < ab[:-1]).all())


@FAST
@given(steps=st.integers(2, 2000), data=st.data())
def test_single_section_respacing_keeps_ends(steps, data):
    count = data.draw(st.integers(2, steps))
    kept = space_timesteps(steps, str(count))
    assert kept[0] == 0 and kept[-1] == steps - 1
    assert len(kept) == count
    assert all(a < b for a, b in zip(kept, kept[1:]))


@FAST
@given(steps=st.integers(20, 2000), data=st.data())
def test_section_respacing_is_increasing_and_keeps_ends(steps, data):
    sections = data.draw(st.integers(1, 4))
    size = steps // sections
    counts = data.draw(st.lists(st.integers(2, size), min_size=sections, max_size=sections))
    kept = space_timesteps(steps, ",".join(map(str, counts)))
    assert kept[0] == 0 and kept[-1] == steps - 1
    assert len(kept) == sum(counts)
    assert all(a < b for a, b in zip(kept, kept[1:]))
    diffusion = create_diffusion(",".join(map(str, counts)), diffusion_steps=steps)
    assert diffusion.timestep_map.tolist() == kept
    # The respaced process has the original marginals at every kept step.
    original = torch.cumprod(1 - named_betas("linear", steps), 0)
    torch.testing.assert_close(diffusion.alphas_cumprod, original[kept])


@FAST
@given(stride=st.integers(1, 100))
def test_ddim_respacing_uses_a_fixed_stride(stride):
    count = len(range(0, 1000, stride))
    kept = space_timesteps(1000, f"ddim{count}")
    assert kept[0] == 0 and len(kept) == count
    assert len({b - a for a, b in zip(kept, kept[1:])}) <= 1


@FAST
@given(name=st.sampled_from(SCHEDULES), seed=st.integers(0, 2**16))
def test_q_sample_at_t0_is_close_to_x(name, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, 4, 4, generator=g)
    diffusion = create_diffusion(noise_schedule=name)
    xt = diffusion.q_sample(x, torch.zeros(2, dtype=torch.long), generator=g)
    # sqrt(1 - alpha_bar_0) is 0.01 (linear) or smaller (cosine).
    assert float((xt - x).abs().max()) < 0.1


@FAST
@given(name=st.sampled_from(SCHEDULES), respacing=st.sampled_from(["", "250", "ddim25", "10,20,5"]))
def test_posterior_variance_positive(name, respacing):
    d = create_diffusion(respacing, noise_schedule=name)
    assert bool((d.posterior_variance[1:] > 0).all())
    assert d.posterior_variance[0] == 0  # q(x_{-1} | x_0, x_1) is a point mass; its log is clipped
    assert bool(torch.isfinite(d.posterior_log_variance_clipped).all())
    assert bool((d.fixed_large_variance > 0).all())


@FAST
@given(name=st.sampled_from(SCHEDULES), seed=st.integers(0, 2**16), t=st.integers(0, 999))
def test_prediction_conversions_invert_each_other(name, seed, t):
    g = torch.Generator().manual_seed(seed)
    x0, eps = (
        torch.randn(2, 2, 3, 3, generator=g, dtype=torch.float64),
        torch.randn(2, 2, 3, 3, generator=g, dtype=torch.float64),
    )
    d, tt = create_diffusion(noise_schedule=name, learn_sigma=False), torch.full((2,), t)
    a, s = d.coefs(tt, x0)
    xt = a * x0 + s * eps
    v = d.v_from_xstart_eps(x0, tt, eps)
    torch.testing.assert_close(d.eps_from_v(xt, tt, v), eps)
    torch.testing.assert_close(d.xstart_from_v(xt, tt, v), x0)
    if t < 990 or name == "linear":  # x0 from eps divides by a, ~1e-5 at the very end of the cosine schedule
        torch.testing.assert_close(d.xstart_from_eps(xt, tt, eps), x0)
    torch.testing.assert_close(d.eps_from_xstart(xt, tt, x0), eps)


@FAST
@given(predict=st.sampled_from(PREDICTIONS), t=st.integers(0, 999), seed=st.integers(0, 2**16))
def test_diffusion_predictions_agree(predict, t, seed):
    g = torch.Generator().manual_seed(seed)
    x0, eps = (
        torch.randn(2, 2, 3, 3, generator=g, dtype=torch.float64),
        torch.randn(2, 2, 3, 3, generator=g, dtype=torch.float64),
    )
    d = create_diffusion(learn_sigma=False, predict=predict)
    tt = torch.full((2,), t)
    xt = d.q_sample(x0, tt, eps)
    a, s = d.coefs(tt, xt)
    pred = {"epsilon": eps, "x0": x0, "v": a * eps - s * x0}[predict]
    torch.testing.assert_close(d.to_xstart(pred, xt, tt), x0)
    torch.testing.assert_close(d.to_eps(pred, xt, tt), eps)


@FAST
@given(
    name=st.sampled_from(SCHEDULES),
    predict=st.sampled_from(PREDICTIONS),
    gamma=st.floats(0.01, 100.0),
    respacing=st.sampled_from(["", "50"]),
)
def test_loss_weights_positive_and_finite(name, predict, gamma, respacing):
    d = create_diffusion(respacing, noise_schedule=name, predict=predict, snr_gamma=gamma)
    w = d.mse_weight(torch.arange(d.num_timesteps))
    assert bool(torch.isfinite(w).all() and (w > 0).all())
    # Each form equals min(snr, gamma) on the x0 error: w * (x0-error factor of the target) = min(snr, gamma).
    snr = d.snr(torch.arange(d.num_timesteps)).double()
    factor = {"epsilon": snr, "x0": torch.ones_like(snr), "v": snr + 1}[predict]
    torch.testing.assert_close(w.double() * factor, snr.clamp(max=gamma), rtol=1e-5, atol=1e-12)
    unweighted = create_diffusion(respacing, noise_schedule=name, predict=predict).mse_weight(torch.arange(5))
    assert bool((unweighted == 1).all())
    assert bool((min_snr_weight(torch.tensor([1e-9, 1e9]), gamma, predict) > 0).all())


def eps_oracle(diffusion, x0, predict="epsilon"):
    """A perfect model for the single data point ``x0`` (called with original timesteps)."""
    ab_full = torch.cumprod(1 - named_betas("linear", 1000), 0)

    def model(x, t, **kwargs):
        ab = ab_full[t].view(-1, 1, 1, 1).to(x.dtype)
        a, s = ab.sqrt(), (1 - ab).sqrt()
        eps = (x - a * x0) / s
        return {"epsilon": eps, "x0": x0.expand_as(x), "v": a * eps - s * x0}[predict]

    return model


@FAST
@given(seed=st.integers(0, 2**16), predict=st.sampled_from(PREDICTIONS), respacing=st.sampled_from(["ddim10", "25"]))
def test_ddim_deterministic_and_oracle_recovers_x0(seed, predict, respacing):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(1, 2, 3, 3, generator=g, dtype=torch.float64) * 2 - 1
    d = create_diffusion(respacing, learn_sigma=False, predict=predict)
    model = eps_oracle(d, x0, predict)
    noise = torch.randn(3, 2, 3, 3, generator=g, dtype=torch.float64)
    a = d.ddim_sample_loop(model, noise.shape, noise, clip_denoised=False, eta=0.0)
    b = d.ddim_sample_loop(model, noise.shape, noise.clone(), clip_denoised=False, eta=0.0)
    assert torch.equal(a, b)
    torch.testing.assert_close(a, x0.expand_as(a), atol=1e-6, rtol=1e-6)
    # DDPM ancestral sampling with the oracle also lands on x0 (its last step adds no noise).
    c = d.p_sample_loop(model, noise.shape, noise, clip_denoised=False, generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(c, x0.expand_as(c), atol=1e-6, rtol=1e-6)
