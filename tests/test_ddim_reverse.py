"""``ddim_reverse_sample`` (DDIM encoding, ``x_t -> x_{t+1}``): closed form, and ``ddim_sample`` undoes it.

A model that predicts the same epsilon wherever it is called makes both DDIM directions exact
inverses (the x_0 estimate is the same at t and t + 1), so the round trip is checked to float
precision, on the full process and on a respaced one (where t + 1 is a jump of many steps).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mdtblocks import create_diffusion


def constant_eps(eps: torch.Tensor):
    def model(x, t, **kwargs):
        return torch.cat([eps, torch.zeros_like(eps)], dim=1)  # learned sigma channels: unused by DDIM

    return model


@settings(max_examples=25, deadline=None)
@given(respacing=st.sampled_from(["", "ddim50", "10"]), frac=st.floats(0.0, 1.0), seed=st.integers(0, 2**32 - 1))
@example(respacing="", frac=0.0, seed=0)  # t = 0
@example(respacing="ddim50", frac=1.0, seed=1)  # the last step of a respaced process
def test_reverse_step_is_closed_form_and_inverted_by_ddim_sample(respacing, frac, seed):
    d = create_diffusion(respacing)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)
    eps = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)
    step = round(frac * (d.num_timesteps - 2))  # t + 1 must be a step of the process
    t = torch.full((2,), step, dtype=torch.long)
    model = constant_eps(eps)
    out = d.ddim_reverse_sample(model, x, t, clip_denoised=False)
    ab = d.alphas_cumprod[step]
    ab_next = d.alphas_cumprod[step + 1]
    x0 = (x - (1 - ab) ** 0.5 * eps) / ab**0.5
    torch.testing.assert_close(out["pred_xstart"], x0, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(out["sample"], ab_next**0.5 * x0 + (1 - ab_next) ** 0.5 * eps, rtol=1e-9, atol=1e-9)
    back = d.ddim_sample(model, out["sample"], t + 1, clip_denoised=False, eta=0.0)["sample"]
    torch.testing.assert_close(back, x, rtol=1e-8, atol=1e-8)


def test_reverse_refuses_eta():
    d = create_diffusion("")
    x = torch.zeros(1, 3, 4, 4)
    with pytest.raises(ValueError, match="eta must be 0, got 0.5"):
        d.ddim_reverse_sample(constant_eps(x), x, torch.tensor([3]), eta=0.5)
