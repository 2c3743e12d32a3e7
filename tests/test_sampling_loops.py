"""Samplers end to end on a loaded official checkpoint: DDPM, DDIM, DPM-Solver++ with guidance."""

from __future__ import annotations

import pytest
import torch

from mdtblocks import classifier_free_guidance, create_diffusion
from mdtblocks.sampling import SAMPLERS, sample


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_sample_official_checkpoint_with_guidance(sampler, official_model):
    model = official_model("mdtv2")
    labels = torch.tensor([1, 7])
    kwargs = dict(sampler=sampler, num_steps=3, cfg_scale=4.0, scale_pow=4.0, guided_channels=3)
    a = sample(model, labels, generator=torch.Generator().manual_seed(0), **kwargs)
    b = sample(model, labels, generator=torch.Generator().manual_seed(0), **kwargs)
    c = sample(model, labels, generator=torch.Generator().manual_seed(0), **{**kwargs, "cfg_scale": 1.0})
    assert a.shape == (2, 4, 8, 8) and torch.isfinite(a).all()
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


def test_sample_equals_the_few_lines_it_replaces(official_model):
    model = official_model("dit")
    labels = torch.tensor([3, 4])
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    ours = sample(model, labels, sampler="ddim", num_steps=10, cfg_scale=1.5, noise=z)
    guided = classifier_free_guidance(model, 1.5)
    y = torch.cat([labels, torch.full_like(labels, model.config.num_classes)])
    manual = create_diffusion("ddim10").ddim_sample_loop(guided, (4, 4, 8, 8), torch.cat([z, z]), False, {"y": y})
    torch.testing.assert_close(ours, manual[:2])


def test_ddpm_loop_generator_controls_every_draw():
    d = create_diffusion("10", learn_sigma=False)
    model = lambda x, t, **k: 0.1 * x
    a = d.p_sample_loop(model, (2, 3, 4, 4), generator=torch.Generator().manual_seed(5), progress=True)
    b = d.p_sample_loop(model, (2, 3, 4, 4), generator=torch.Generator().manual_seed(5))
    c = d.p_sample_loop(model, (2, 3, 4, 4), generator=torch.Generator().manual_seed(6))
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


def test_ddim_eta_uses_the_generator():
    d = create_diffusion("ddim10", learn_sigma=False)
    model = lambda x, t, **k: 0.1 * x
    z = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    a = d.ddim_sample_loop(model, z.shape, z, eta=1.0, generator=torch.Generator().manual_seed(1))
    b = d.ddim_sample_loop(model, z.shape, z, eta=1.0, generator=torch.Generator().manual_seed(1))
    c = d.ddim_sample_loop(model, z.shape, z, eta=0.0, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


def test_progressive_loops_yield_every_step():
    d = create_diffusion("ddim10", learn_sigma=False)
    model = lambda x, t, **k: 0.1 * x
    steps = list(d.ddim_sample_loop_progressive(model, (1, 3, 4, 4), generator=torch.Generator().manual_seed(0)))
    assert len(steps) == 10 and all("pred_xstart" in s for s in steps)


def test_unknown_sampler(official_model):
    with pytest.raises(ValueError, match="'euler'.*'ddpm', 'ddim', 'dpm_solver\\+\\+'"):
        sample(official_model("dit"), torch.tensor([1]), sampler="euler")
