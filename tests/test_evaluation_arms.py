"""The study's arm table, its FLOPs count per training step, and the FLOPs axis of the learning curves."""

from __future__ import annotations

import pytest

from mdtblocks import DiT, MaskedDiffusionTransformer
from mdtblocks.evaluation import ARMS, Arm, Curve, build_arm_criterion, reach_table, register_arm, sampler_at_nfe
from mdtblocks.evaluation.arms import arm
from mdtblocks.evaluation.step_flops import BACKWARD_FACTOR, step_flops
from mdtblocks.models.flops import forward_flops
from mdtblocks.objectives import EDMObjective, GaussianObjective
from mdtblocks.objectives.flow import FlowMatching
from mdtblocks.tokens import MaskedTwoPassRule, PlainRule

SMALL = {"input_size": 8, "in_channels": 1, "num_classes": 10, "hidden_size": 32, "num_heads": 2, "patch_size": 2}


def _model(backbone: str, **changes):
    if backbone == "DiT":
        return DiT.from_preset("DiT-S/2", depth=3, learn_sigma=True, **{**SMALL, **changes})
    return MaskedDiffusionTransformer.from_preset(f"{backbone}-S/2", depth=2, decode_layer=1, learn_sigma=True,
                                                   **{**SMALL, **changes})


@pytest.mark.parametrize("name", [n for n, row in ARMS.items() if not row.unavailable])
def test_every_available_arm_builds_its_criterion(name: str) -> None:
    row = arm(name)
    model = _model(row.backbone, **row.model_changes)
    criterion = build_arm_criterion(row, model, {"snr_gamma": 5.0, "masked_draws": "independent"})
    expected_objective = FlowMatching if "SiT" in name or "flow" in name else GaussianObjective
    assert isinstance(criterion.objective, expected_objective)
    masked = row.backbone in ("MDT", "MDTv2") and name != "MDTv2-nomask"
    assert isinstance(criterion.tokens, MaskedTwoPassRule if masked else PlainRule)
    assert criterion.extra_losses == ()


def test_pending_arms_are_listed_and_refused_with_their_reason() -> None:
    pending = [name for name, row in ARMS.items() if row.unavailable]
    for name in pending:
        with pytest.raises(ValueError, match=f"arm '{name}' is not available yet: needs"):
            arm(name)
    with pytest.raises(ValueError, match="unknown arm 'UNet'; expected one of"):
        arm("UNet")
    with pytest.raises(ValueError, match="an arm named 'DiT' is already registered"):
        register_arm(Arm("DiT", "DiT"))
    with pytest.raises(ValueError, match="backbone 'UNet' is not one of"):
        Arm("x", "UNet")


def test_samplers_draw_the_same_number_of_network_evaluations() -> None:
    assert sampler_at_nfe(GaussianObjective(), 20) == ("ddim", 20)
    assert sampler_at_nfe(GaussianObjective(), 20, "ddpm") == ("ddpm", 20)
    assert sampler_at_nfe(FlowMatching(), 20) == ("euler", 20)
    assert sampler_at_nfe(EDMObjective(), 19) == ("heun", 10)  # Heun: 2 evaluations a step, 1 on the last


def test_step_flops_counts_every_pass_forward_and_backward() -> None:
    dit = _model("DiT")
    mdt = MaskedDiffusionTransformer.from_preset("MDTv2-S/2", depth=4, decode_layer=1, learn_sigma=True, **SMALL)
    assert step_flops(dit, PlainRule()) == BACKWARD_FACTOR * forward_flops(dit)
    assert step_flops(dit, PlainRule(), extra_forward_flops=100) == BACKWARD_FACTOR * (forward_flops(dit) + 100)
    n = mdt.num_tokens
    fixed = MaskedTwoPassRule(mask_ratio=0.5)  # keeps int(16 * 0.5) = 8 tokens in the masked pass
    assert step_flops(mdt, fixed) == BACKWARD_FACTOR * (forward_flops(mdt) + forward_flops(mdt, n - int(n * 0.5)))
    ranged = step_flops(mdt, MaskedTwoPassRule(0.3, 0.2))  # between the ends of its ratio interval
    low = BACKWARD_FACTOR * (forward_flops(mdt) + forward_flops(mdt, int(n * 0.5)))
    high = BACKWARD_FACTOR * (forward_flops(mdt) + forward_flops(mdt, int(n * 0.7)))
    assert low < ranged < high
    assert step_flops(mdt, PlainRule()) == BACKWARD_FACTOR * forward_flops(mdt)

    class Counted:  # a rule outside the package counts its own passes
        def forward_flops(self, model) -> float:
            return 7.0

    assert step_flops(dit, Counted()) == BACKWARD_FACTOR * 7.0
    with pytest.raises(TypeError, match="cannot count the passes of token rule object"):
        step_flops(dit, object())
    with pytest.raises(ValueError, match="extra_forward_flops must be non-negative, got -1"):
        step_flops(dit, PlainRule(), extra_forward_flops=-1)


def test_reach_table_reads_the_flops_axis() -> None:
    base = Curve((1, 2), (10.0, 20.0), (2.0, 1.0), flops=(100.0, 200.0))
    other = Curve((1, 2), (30.0, 60.0), (1.5, 0.5), flops=(300.0, 600.0))
    table = reach_table({"a": [base], "b": [other]}, "fd", 1.0, lower_is_better=True)
    assert table.flops == {"a": [200.0], "b": [450.0]}  # b crosses 1.0 halfway between its evaluations
    assert table.ratios("b", "a", by="flops") == [2.25]
    assert table.ratios("b", "a", by="steps") == [0.75]
    without = reach_table({"a": [Curve((1,), (1.0,), (0.0,))]}, "fd", 1.0, lower_is_better=True)
    assert without.flops == {"a": [None]}
    with pytest.raises(ValueError, match="by must be 'steps', 'seconds' or 'flops'"):
        table.ratios("b", "a", by="images")
    with pytest.raises(ValueError, match="flops, if given"):
        Curve((1, 2), (1.0, 2.0), (0.0, 0.0), flops=(1.0,))
