"""Classifier-free guidance: parity with the official forward_with_cfg, schedule and validation."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mdtblocks import classifier_free_guidance
from mdtblocks.sampling import power_cosine_scale
from tests.conftest import rel_err

# The official evaluation: cfg 4, only 3 channels guided; MDT with the power-cosine schedule (pow 4).
SCALE_POW = {"mdtv2": 4.0, "mdtv1": 4.0, "dit": None}


@pytest.mark.parametrize("arch", ["mdtv2", "mdtv1", "dit"])
def test_guidance_matches_official_forward_with_cfg(arch, official_model, conformance_inputs, conformance_reference):
    model = official_model(arch)
    ref = conformance_reference(arch)
    x, t, y = conformance_inputs["x"], conformance_inputs["t"], conformance_inputs["y"]
    num_classes = model.config.num_classes
    guided = classifier_free_guidance(model, 4.0, scale_pow=SCALE_POW[arch], guided_channels=3)
    with torch.no_grad():
        out = guided(
            torch.cat([x, x]),
            torch.cat([t, t]),
            torch.cat([y.clamp(max=num_classes - 1), torch.full_like(y, num_classes)]),
        )
    err = rel_err(out, ref["out_cfg"])
    assert err < 1e-4, f"{arch} out_cfg: relative error {err:.2e}"


def fake_model(x, t, y):
    # Conditional and unconditional outputs differ by a label-dependent offset on every channel.
    return torch.cat([x, -x], dim=1) + y.float().view(-1, 1, 1, 1)


def test_all_channels_guided_by_default():
    x = torch.randn(2, 4, 2, 2)
    guided = classifier_free_guidance(fake_model, 3.0)
    out = guided(torch.cat([x, x]), torch.tensor([10, 10, 10, 10]), torch.tensor([1, 2, 0, 0]))
    # uncond + 3 (cond - uncond) = uncond + 3 * label on the 4 prediction channels; variance channels pass through.
    expected = torch.cat([x, -x], dim=1)
    expected[:, :4] += 3 * torch.tensor([1.0, 2.0]).view(-1, 1, 1, 1)
    torch.testing.assert_close(out[:2, :4], expected[:, :4])
    torch.testing.assert_close(out[2:, :4], expected[:, :4])
    torch.testing.assert_close(out[:2, 4:], (-x) + torch.tensor([1.0, 2.0]).view(-1, 1, 1, 1))
    torch.testing.assert_close(out[2:, 4:], -x)


def test_guided_channels_limits_guidance():
    x = torch.randn(2, 4, 2, 2)
    out = classifier_free_guidance(fake_model, 3.0, guided_channels=3)(
        torch.cat([x, x]), torch.tensor([5, 5, 5, 5]), torch.tensor([1, 1, 0, 0])
    )
    torch.testing.assert_close(out[:2, :3], x[:, :3] + 3.0)
    torch.testing.assert_close(out[:2, 3], x[:, 3] + 1.0)  # the conditional pass, unguided
    torch.testing.assert_close(out[2:, 3], x[:, 3])


def test_power_cosine_schedule_endpoints():
    t = torch.tensor([0, 500, 999, 1000])
    s = power_cosine_scale(t, 4.0, 4.0, 1000)
    assert s[0] == pytest.approx(4.0)
    assert s[-1] == pytest.approx(1.0)
    expected_mid = 1 + 3 * (1 - math.cos(0.5**4 * math.pi)) / 2
    assert s[1] == pytest.approx(expected_mid, rel=1e-6)
    assert bool((s[:-1] >= s[1:]).all())  # monotone: stronger guidance near the data


def test_cfg_scale_one_is_the_conditional_model():
    x = torch.randn(2, 4, 2, 2)
    out = classifier_free_guidance(fake_model, 1.0, scale_pow=4.0)(
        torch.cat([x, x]), torch.tensor([3, 7, 3, 7]), torch.tensor([1, 2, 0, 0])
    )
    torch.testing.assert_close(out[:2], fake_model(x, None, torch.tensor([1, 2])))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"cfg_scale": float("nan")}, "cfg_scale"),
        ({"cfg_scale": 2.0, "scale_pow": -1.0}, "scale_pow"),
        ({"cfg_scale": 2.0, "guided_channels": 0}, "guided_channels"),
    ],
)
def test_bad_guidance_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        classifier_free_guidance(fake_model, **kwargs)


def test_odd_batch_raises():
    with pytest.raises(ValueError, match="even size, got batch 3"):
        classifier_free_guidance(fake_model, 2.0)(
            torch.randn(3, 4, 2, 2), torch.zeros(3, dtype=torch.long), torch.zeros(3, dtype=torch.long)
        )


def test_more_guided_channels_than_outputs_guides_all():
    # As the official slice [:, :3] does for a model with fewer output channels.
    x = torch.randn(2, 1, 2, 2)
    t, y = torch.zeros(2, dtype=torch.long), torch.tensor([2, 0])
    a = classifier_free_guidance(fake_model, 2.0, guided_channels=3)(x, t, y)
    b = classifier_free_guidance(fake_model, 2.0, guided_channels=2)(x, t, y)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a[0], torch.cat([x[0], -x[0]]) + 4.0)


@settings(max_examples=30, deadline=None)
@given(cfg=st.floats(1.0, 10.0), power=st.floats(0.25, 8.0), steps=st.sampled_from([250, 1000]))
def test_power_cosine_scale_is_monotone_between_one_and_cfg(cfg, power, steps):
    t = torch.arange(steps + 1)
    s = power_cosine_scale(t, cfg, power, steps)
    assert bool((s >= 1 - 1e-5).all() and (s <= cfg + 1e-5).all())
    assert bool((s[:-1] >= s[1:] - 1e-5).all())


@settings(max_examples=20, deadline=None)
@given(cfg=st.floats(-2.0, 8.0), seed=st.integers(0, 2**16))
def test_guidance_is_the_affine_mix_of_both_passes(cfg, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 4, 2, 2, generator=g)
    t, y = torch.randint(0, 1000, (6,), generator=g), torch.tensor([1, 2, 3, 0, 0, 0])
    out = classifier_free_guidance(fake_model, cfg)(torch.cat([x, x]), t, y)
    both = fake_model(torch.cat([x, x]), t, y)
    cond, uncond = both[:3, :4], both[3:, :4]
    torch.testing.assert_close(out[:3, :4], uncond + cfg * (cond - uncond))
    torch.testing.assert_close(out[3:, :4], out[:3, :4])
