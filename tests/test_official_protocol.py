"""The official training protocol: independent masked-pass draws, ``--official``, and their refusals."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from helpers import tiny_mdt
from training_utils import load_recipe

from mdtblocks.diffusion import MaskedDiffusionObjective, create_diffusion
from mdtblocks.masking import MaskSampler
from mdtblocks.training import draw_step_randomness


def draw(model, independent: bool):
    return draw_step_randomness(
        model, seed=3, step=5, global_batch=6, sample_shape=(3, 8, 8), num_timesteps=1000,
        device=torch.device("cpu"), independent_masked_pass=independent,
    )


def test_independent_draws_add_the_masked_pass_own_noise_and_drops_and_change_nothing_else():
    model = tiny_mdt().train()
    shared, independent = draw(model, False), draw(model, True)
    assert shared.masked_noise is None and shared.masked_drop_label is None
    for name in ("t", "noise", "drop_label"):
        assert torch.equal(getattr(shared, name), getattr(independent, name)), name
    assert torch.equal(shared.mask.ids_keep, independent.mask.ids_keep)
    assert independent.masked_noise.shape == independent.noise.shape
    assert not torch.allclose(independent.masked_noise, independent.noise)
    rows = independent.rows(torch.tensor([4, 1]))
    assert torch.equal(rows.masked_noise, independent.masked_noise[[4, 1]])
    assert torch.equal(rows.masked_drop_label, independent.masked_drop_label[[4, 1]])


def test_objective_uses_the_masked_draws_only_when_independent():
    model = tiny_mdt().train()
    x, y = torch.randn(6, 3, 8, 8), torch.randint(0, 5, (6,))
    r = draw(model, True)
    with_shared_noise = dataclasses.replace(r, masked_noise=r.noise, masked_drop_label=r.drop_label)
    independent = MaskedDiffusionObjective(create_diffusion())
    shared = MaskedDiffusionObjective(create_diffusion(), masked_draws="shared")
    assert independent.masked_draws == "independent"  # the default: the official protocol
    torch.manual_seed(0)
    a = independent(model, x, y, with_shared_noise)["loss_masked"]
    b = shared(model, x, y, r)["loss_masked"]  # shared ignores the masked pass's own draws
    c = independent(model, x, y, r)["loss_masked"]
    assert torch.allclose(a, b, atol=1e-6) and not torch.allclose(a, c)


def test_objective_refuses_missing_masked_draws_and_unknown_protocols():
    model = tiny_mdt().train()
    x, y = torch.randn(6, 3, 8, 8), torch.randint(0, 5, (6,))
    with pytest.raises(ValueError, match="masked_noise=None"):
        MaskedDiffusionObjective(create_diffusion())(model, x, y, draw(model, False))
    with pytest.raises((ValueError, TypeError), match="official"):  # TypeError: the test suite's type-check hook
        MaskedDiffusionObjective(create_diffusion(), masked_draws="official")


def test_objective_draw_follows_the_protocol():
    model = tiny_mdt().train()
    x = torch.randn(3, 3, 8, 8)
    r = MaskedDiffusionObjective(create_diffusion()).draw(model, x, torch.Generator().manual_seed(0))
    s = MaskedDiffusionObjective(create_diffusion(), masked_draws="shared").draw(model, x, torch.Generator().manual_seed(0))
    assert r.masked_noise is not None and s.masked_noise is None
    assert torch.equal(r.noise, s.noise) and torch.equal(r.mask.ids_keep, s.mask.ids_keep)


def test_plan_from_draws_keeps_the_smallest_noise_and_checks_its_input():
    sampler = MaskSampler(0.3, 0.2)
    noise = torch.rand(2, 16, generator=torch.Generator().manual_seed(1))
    plan = sampler.plan_from_draws(noise, 0.5)  # ratio 0.4: int(16 * 0.6) = 9 kept
    assert plan.num_kept == 9
    assert torch.equal(plan.ids_keep.sort(1).values, noise.argsort(1)[:, :9].sort(1).values)
    with pytest.raises(ValueError, match="u must lie in"):
        sampler.plan_from_draws(noise, 1.0)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("mdtv2_imagenet256", dict(optimizer="adan", grad_clip=1.0, snr_gamma=5.0, adan_betas=(0.98, 0.92, 0.99), objective="gaussian")),
        ("mdt_imagenet256", dict(optimizer="adamw", grad_clip=None, snr_gamma=None, objective="gaussian")),
        ("dit_imagenet256", dict(optimizer="adamw", grad_clip=None, snr_gamma=None, objective="gaussian")),
    ],
)
def test_official_flag_fixes_the_official_protocol(name, expected):
    recipe = load_recipe(name).RECIPE
    # From the built-in demo's defaults (EMA 0.995) too: --official wins over the demo's values.
    for argv in (["--official", "--data", "d"], ["--official"]):
        cfg, _ = recipe.configure(argv)
        assert cfg.ema_decay == 0.9999 and cfg.weight_decay == 0.0 and cfg.masked_draws == "independent"
        assert cfg.mask_ratio is None and cfg.mask_ratio_range is None  # the preset's (official) ratios
        for key, value in expected.items():
            assert getattr(cfg, key) == value, key


def test_official_flag_refuses_a_contradicting_flag(capsys):
    recipe = load_recipe("mdtv2_imagenet256").RECIPE
    with pytest.raises(SystemExit) as exit_info:
        recipe.configure(["--official", "--data", "d", "--ema-decay", "0.999", "--masked-draws", "shared"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--ema-decay 0.999" in err and "--masked-draws shared" in err and "ema_decay=0.9999" in err
    # Flags equal to the official values, and free flags, are accepted.
    cfg, _ = recipe.configure(["--official", "--data", "d", "--ema-decay", "0.9999", "--lr", "5e-4"])
    assert cfg.lr == 5e-4


def test_dit_refuses_masked_draws(capsys):
    with pytest.raises(SystemExit):
        load_recipe("dit_imagenet256").RECIPE.configure(["--data", "d", "--masked-draws", "shared"])
    assert "DiT has no masked pass" in capsys.readouterr().err
