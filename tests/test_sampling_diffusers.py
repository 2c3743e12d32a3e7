"""Sampling through diffusers schedulers, cross-checked against our own process."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDPMScheduler, DPMSolverMultistepScheduler

from mdtblocks import create_diffusion
from mdtblocks.sampling import diffusers_sample_loop, make_scheduler, scheduler_model_output
from tests.conftest import rel_err


def fixed(out):
    return lambda x, t, **kwargs: out


@pytest.mark.parametrize("step, fp64_tables", [(49, False), (25, False), (49, True), (25, True), (1, True)])
def test_ddpm_learned_range_step_matches_p_sample(step, fp64_tables):
    # diffusers with 50 "leading" steps visits 980, 960, ..., 0: our "ddim50" respacing.
    # float64 tensors so that solving for mean and std below loses no precision; diffusers keeps
    # its alphas in float32, so the comparison still measures the fp32 schedule of both.
    g = torch.Generator().manual_seed(step)
    x = torch.randn(2, 4, 4, 4, generator=g, dtype=torch.float64)
    output = torch.cat(
        [
            torch.randn(2, 4, 4, 4, generator=g, dtype=torch.float64),
            torch.rand(2, 4, 4, 4, generator=g, dtype=torch.float64) * 2 - 1,
        ],
        dim=1,
    )
    diffusion = create_diffusion("ddim50")
    scheduler = make_scheduler("ddpm")
    assert isinstance(scheduler, DDPMScheduler) and scheduler.config.variance_type == "learned_range"
    if fp64_tables:
        # diffusers keeps alpha_bar in float32, where 1 - alpha_bar_prev cancels near t = 0 (a 3e-5
        # relative error in the posterior variance at step 20 -> 0); compare the formulas in float64 there.
        scheduler.betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
        scheduler.alphas = 1.0 - scheduler.betas
        scheduler.alphas_cumprod = torch.cumprod(scheduler.alphas, dim=0)
    scheduler.set_timesteps(50)
    t_train = int(diffusion.timestep_map[step])
    assert t_train in scheduler.timesteps.tolist()

    ours = diffusion.p_mean_variance(fixed(output), x, torch.full((2,), step), clip_denoised=False)
    z = [torch.randn(x.shape, generator=torch.Generator().manual_seed(s), dtype=torch.float64) for s in (1, 2)]
    prev = [scheduler.step(output, t_train, x, generator=torch.Generator().manual_seed(s)).prev_sample for s in (1, 2)]
    # Solve prev_k = mean + std * z_k for mean and std where the two noises differ enough.
    ok = (z[0] - z[1]).abs() > 0.5
    std = (prev[0] - prev[1]) / (z[0] - z[1])
    mean = prev[0] - std * z[0]
    assert rel_err(mean[ok], ours["mean"][ok]) < 1e-5
    assert rel_err(std[ok] ** 2, ours["variance"][ok]) < 1e-5
    ours_step = diffusion.p_sample(fixed(output), x, torch.full((2,), step), clip_denoised=False, noise=z[0])
    assert rel_err(ours_step["sample"], prev[0]) < 1e-5


def test_ddim_scheduler_matches_ddim_loop(official_model, conformance_reference):
    model = official_model("dit")
    ref = conformance_reference("dit")
    z, y = ref["ddim_z"], ref["ddim_y"]
    ours = create_diffusion("ddim10").ddim_sample_loop(model, z.shape, z, False, {"y": y})
    theirs = diffusers_sample_loop(model, make_scheduler("ddim"), z.shape, z, 10, {"y": y})
    assert rel_err(theirs, ours) < 1e-4
    assert rel_err(theirs, ref["ddim_sample"]) < 1e-4


def oracle(x0, diffusion_steps=1000, predict="epsilon"):
    """A perfect denoiser for a single data point x0 (learned-sigma layout)."""
    ab = torch.cumprod(1 - torch.linspace(1e-4, 0.02, diffusion_steps, dtype=torch.float64), 0)

    def model(x, t, **kwargs):
        a = ab[t].sqrt().view(-1, 1, 1, 1).float()
        s = (1 - ab[t]).sqrt().view(-1, 1, 1, 1).float()
        eps = (x - a * x0) / s
        pred = {"epsilon": eps, "v": a * eps - s * x0, "x0": x0.expand_as(x)}[predict]
        return torch.cat([pred, torch.zeros_like(pred)], dim=1)

    return model


@pytest.mark.parametrize("kind", ["dpm_solver++", "ddim", "ddpm"])
@pytest.mark.parametrize("predict", ["epsilon", "v"])
def test_schedulers_recover_x0_with_an_oracle(kind, predict):
    x0 = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(0)).clamp(-1, 1)
    g = torch.Generator().manual_seed(1)
    scheduler = make_scheduler(kind, predict=predict)
    out = diffusers_sample_loop(
        oracle(x0, predict=predict), scheduler, (2, 4, 4, 4), num_inference_steps=25, generator=g
    )
    assert out.shape == (2, 4, 4, 4)
    assert rel_err(out, x0.expand_as(out)) < 1e-3


def test_dpm_solver_gets_only_the_prediction_half():
    scheduler = make_scheduler("dpm_solver++")
    assert isinstance(scheduler, DPMSolverMultistepScheduler)
    out = torch.randn(2, 8, 4, 4)
    torch.testing.assert_close(scheduler_model_output(scheduler, out, 4), out[:, :4])
    torch.testing.assert_close(scheduler_model_output(make_scheduler("ddpm"), out, 4), out)
    with pytest.raises(ValueError, match="6 channels"):
        scheduler_model_output(scheduler, torch.randn(2, 6, 4, 4), 4)
    with pytest.raises(ValueError, match="variance_type"):
        scheduler_model_output(make_scheduler("dpm_solver++", variance_type="learned_range"), out, 4)


def test_make_scheduler_rejects_unknown_kind():
    with pytest.raises(ValueError, match="'heun'.*dpm_solver"):
        make_scheduler("heun")


def test_diffusers_loop_is_reproducible_from_the_generator():
    x0 = torch.zeros(1, 4, 4, 4)
    model = oracle(x0)
    sched = make_scheduler("ddpm")
    a = diffusers_sample_loop(
        model, sched, (1, 4, 4, 4), num_inference_steps=5, generator=torch.Generator().manual_seed(3)
    )
    b = diffusers_sample_loop(
        model, sched, (1, 4, 4, 4), num_inference_steps=5, generator=torch.Generator().manual_seed(3)
    )
    torch.testing.assert_close(a, b)
