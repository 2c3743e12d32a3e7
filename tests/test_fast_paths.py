"""Fast paths compute the reference function: bf16 autocast against fp32, sdpa against math, with a bias that matters."""

from __future__ import annotations

import pytest
import torch
from conftest import rel_err
from helpers import tiny_mdt


def outputs(model, x, t, y, ids_keep, precision):
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        return model(x, t, y).float(), model(x, t, y, ids_keep=ids_keep).float()


@pytest.mark.parametrize("backend", ["sdpa", "math"])
def test_bf16_matches_fp32_closely_enough_to_see_a_wrong_bias_or_a_dropped_token(backend):
    model = tiny_mdt(hidden_size=64, depth=4, decode_layer=2, attention_backend=backend)
    g = torch.Generator().manual_seed(0)
    tables = [m.rel_pos_bias.relative_position_bias_table for m in model.modules() if getattr(m, "rel_pos_bias", None) is not None]
    with torch.no_grad():
        for table in tables:  # a bias of trained size (std 1), so that its errors show
            table.copy_(torch.randn(table.shape, generator=g))
    x, t, y = torch.randn(4, 3, 8, 8, generator=g), torch.tensor([1, 300, 600, 999]), torch.tensor([0, 1, 2, 3])
    plan = model.mask_sampler(4, model.num_tokens, generator=g)
    ref, ref_m = outputs(model, x, t, y, plan.ids_keep, "fp32")
    ours, ours_m = outputs(model, x, t, y, plan.ids_keep, "bf16")
    err, err_m = rel_err(ours, ref), rel_err(ours_m, ref_m)
    assert err < 2e-2 and err_m < 2e-2, (err, err_m)
    # The tolerance is tight enough to catch the errors a fast path could make:
    dropped = plan.ids_keep[:, :-1]  # one kept token lost
    lost_token = outputs(model, x, t, y, dropped, "fp32")[1]
    assert rel_err(lost_token, ref_m) > 3 * err_m
    with torch.no_grad():
        for table in tables:  # a wrong relative bias: the rows of another offset
            table.copy_(table.roll(1, dims=0))
    wrong_bias = outputs(model, x, t, y, plan.ids_keep, "fp32")[1]
    assert rel_err(wrong_bias, ref_m) > 3 * err_m
