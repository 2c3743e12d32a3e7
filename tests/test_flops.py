"""Model FLOPs: the DiT paper's Table 4, the masked pass, and refusals."""

from __future__ import annotations

import pytest
import torch

from mdtblocks import DiT, MaskedDiffusionTransformer, forward_flops


@pytest.mark.parametrize(
    ("name", "paper_gflops", "printed_unit"), [("DiT-XL/2", 118.6, 0.1), ("DiT-B/4", 5.56, 0.01), ("DiT-S/8", 0.36, 0.01)]
)
def test_dit_presets_match_the_papers_table_4(name, paper_gflops, printed_unit):
    with torch.device("meta"):  # nothing allocated: the count never needs real weights
        model = DiT.from_preset(name, input_size=32, num_classes=1000)
    gflops = forward_flops(model) / 1e9
    # Within 0.1% or half the table's last printed digit (counted: 118.62, 5.5652, 0.3580).
    assert abs(gflops - paper_gflops) <= max(1e-3 * paper_gflops, printed_unit / 2), gflops


def test_count_is_the_analytic_count_of_a_dit_block_stack():
    model = DiT.from_preset("DiT-S/2", input_size=16, num_classes=10)
    d, n, depth, p, c = 384, 64, 12, 2, 4
    per_block = 12 * n * d * d + 2 * n * n * d + 6 * d * d  # qkv+proj+mlp, attention, adaLN
    extra = n * p * p * c * d + 256 * d + d * d + 2 * d * d + n * d * p * p * 2 * c  # embedders, final layer
    assert forward_flops(model) == depth * per_block + extra


def test_masked_pass_costs_less_and_grows_with_kept_tokens():
    model = MaskedDiffusionTransformer.from_preset("MDTv2-S/2", input_size=16, num_classes=10)
    n = model.num_tokens
    plain, half, most = forward_flops(model), forward_flops(model, n // 2), forward_flops(model, n - 1)
    assert half < most  # the encoder sees only the kept tokens
    assert most > plain  # with all but one token kept, the side block's extra full-grid pass dominates
    with pytest.raises(ValueError, match=r"kept_tokens=0 is outside \[1, 64\]"):
        forward_flops(model, 0)


def test_dit_has_no_masked_pass_and_non_models_are_refused():
    model = DiT.from_preset("DiT-S/8", input_size=16, num_classes=10)
    with pytest.raises(ValueError, match="kept_tokens=3: a DiT has no masked pass"):
        forward_flops(model, 3)
    with pytest.raises(TypeError, match="Linear"):  # the library's message, or the test suite's type-check hook
        forward_flops(torch.nn.Linear(2, 2))
