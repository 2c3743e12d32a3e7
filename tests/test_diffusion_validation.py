"""Bad input to the diffusion and samplers: ValueErrors that name the value and the allowed ones."""

from __future__ import annotations

import pytest
import torch

from mdtblocks import create_diffusion
from mdtblocks.diffusion import space_timesteps


@pytest.mark.parametrize("name", ["quadratic", "Linear", "sigmoid"])
def test_unknown_schedule(name):
    with pytest.raises(ValueError, match=rf"'{name}'.*'linear', 'cosine'"):
        create_diffusion(noise_schedule=name)


@pytest.mark.parametrize("predict", ["noise", "x_prev", "score"])
def test_unknown_prediction(predict):
    with pytest.raises(ValueError, match=rf"'{predict}'.*'epsilon', 'x0', 'v'"):
        create_diffusion(predict=predict)


@pytest.mark.parametrize("respacing", ["abc", "ddimx", "25,x", "fast", "ddim"])
def test_malformed_respacing(respacing):
    with pytest.raises(ValueError, match=rf"'{respacing}'.*ddimN"):
        create_diffusion(respacing)


@pytest.mark.parametrize(
    "respacing, match", [("2000", "2000"), ("ddim999", "999"), ("0", "positive"), ("10,600", "600")]
)
def test_impossible_respacing(respacing, match):
    with pytest.raises(ValueError, match=match):
        space_timesteps(1000, respacing)


def test_too_few_linear_steps():
    with pytest.raises(ValueError, match="at least 20 steps.*10"):
        create_diffusion(diffusion_steps=10)


@pytest.mark.parametrize("gamma", [0.0, -5.0, float("inf")])
def test_bad_snr_gamma(gamma):
    with pytest.raises(ValueError, match="snr_gamma"):
        create_diffusion(snr_gamma=gamma)


def zeros_model(channels):
    return lambda x, t, **kwargs: torch.zeros(x.shape[0], channels, *x.shape[2:])


@pytest.mark.parametrize("respacing, t", [("", 1000), ("", -1), ("50", 50), ("ddim10", 999)])
def test_timesteps_outside_the_schedule(respacing, t):
    d = create_diffusion(respacing)
    x = torch.zeros(2, 4, 4, 4)
    tt = torch.tensor([0, t])
    with pytest.raises(ValueError, match=rf"\[{min(0, t)}, {max(0, t)}\].*\[0, {d.num_timesteps - 1}\]"):
        d.p_mean_variance(zeros_model(8), x, tt)
    with pytest.raises(ValueError, match="outside"):
        d.training_losses(zeros_model(8), x, tt)
    with pytest.raises(ValueError, match="outside"):
        d.check_timesteps(tt, 2)


def test_float_and_misshaped_timesteps():
    d = create_diffusion()
    # Under the jaxtyping hook the annotation catches these first (a TypeError too).
    with pytest.raises(TypeError, match=r"integer|Int\["):
        d.training_losses(zeros_model(8), torch.zeros(2, 4, 4, 4), torch.tensor([1.0, 2.0]))
    with pytest.raises(TypeError, match="integer"):
        d.check_timesteps(torch.tensor([1.0, 2.0]), 2)
    with pytest.raises(ValueError, match=r"shape \(2,\), got \(3,\)"):
        d.check_timesteps(torch.tensor([1, 2, 3]), 2)


@pytest.mark.parametrize(
    "learn_sigma, sigma_small, channels, variance",
    [
        (True, False, 4, "learned_range"),
        (False, False, 8, "fixed_large"),
        (False, True, 8, "fixed_small"),
        (True, False, 6, "learned_range"),
    ],
)
def test_wrong_output_channels(learn_sigma, sigma_small, channels, variance):
    d = create_diffusion(learn_sigma=learn_sigma, sigma_small=sigma_small)
    x, t = torch.zeros(2, 4, 4, 4), torch.tensor([3, 500])
    expected = 8 if learn_sigma else 4
    pattern = rf"{channels} channels.*'{variance}' needs {expected}.*'fixed_large' needs 4"
    with pytest.raises(ValueError, match=pattern):
        d.p_mean_variance(zeros_model(channels), x, t)
    with pytest.raises(ValueError, match=pattern):
        d.training_losses(zeros_model(channels), x, t)


def test_loop_shape_and_noise_must_agree():
    d = create_diffusion("ddim10")
    with pytest.raises(ValueError, match=r"noise has shape \(1, 4, 4, 4\) but shape is \(2, 4, 4, 4\)"):
        d.ddim_sample_loop(zeros_model(8), (2, 4, 4, 4), noise=torch.zeros(1, 4, 4, 4))
    with pytest.raises(ValueError, match="eta"):
        d.ddim_sample(zeros_model(8), torch.zeros(1, 4, 4, 4), torch.tensor([3]), eta=-1.0)


def test_a_section_can_be_skipped_with_a_zero_count():
    from mdtblocks.diffusion import space_timesteps

    steps = space_timesteps(1000, "100,0,5")
    assert len(steps) == 105 and steps[0] == 0 and steps[-1] == 999
    assert not [s for s in steps if 334 <= s <= 666]  # the middle section is skipped
