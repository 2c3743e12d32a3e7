"""The study's arm table, its FLOPs count per training step, and the FLOPs axis of the learning curves."""

from __future__ import annotations

import pytest
import torch

from mdtblocks import DiT, MaskDiT, MaskedDiffusionTransformer
from mdtblocks.evaluation import ARMS, Arm, Curve, build_arm_criterion, reach_table, register_arm, sampler_at_nfe
from mdtblocks.alignment import AlignmentLoss, InceptionEncoder
from mdtblocks.evaluation.arms import alignment, alignment_head_flops, arm, inception_resolution
from mdtblocks.evaluation.step_flops import BACKWARD_FACTOR, step_flops
from mdtblocks.models.flops import forward_flops
from mdtblocks.objectives import EDMObjective, GaussianObjective
from mdtblocks.objectives.flow import FlowMatching
from mdtblocks.masking import Route
from mdtblocks.tokens import MaskDiTDropRule, MaskedTwoPassRule, PlainRule, RoutedRule

class TinyInception(torch.nn.Module):
    """Laid out as the FID Inception script module, small: 32 px give a 8 x 8 ``mixed_6`` map."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layers = torch.nn.Sequential()
        self.layers.add_module("conv", torch.nn.Conv2d(3, 6, 3, stride=2, padding=1))
        self.layers.add_module("mixed_6", torch.nn.Conv2d(6, 10, 3, stride=2, padding=1))


def tiny_encoder(resolution: int = 32) -> InceptionEncoder:
    return InceptionEncoder(TinyInception(), resolution=resolution)


ALIGN_ARMS = ("SiT-REPA", "MDTv2-flow-REPA", "SiT-dispersive")

SMALL = {"input_size": 8, "in_channels": 1, "num_classes": 10, "hidden_size": 32, "num_heads": 2, "patch_size": 2}


def _model(backbone: str, **changes):
    if backbone == "DiT":
        return DiT.from_preset("DiT-S/2", depth=7, learn_sigma=True, **{**SMALL, **changes})
    if backbone == "MaskDiT":
        fields = {**SMALL, "depth": 6, "decoder_hidden_size": 32, "decoder_num_heads": 2, **changes}
        return MaskDiT.from_preset("MaskDiT-S/2", **fields)
    return MaskedDiffusionTransformer.from_preset(f"{backbone}-S/2", depth=2, decode_layer=1, learn_sigma=True,
                                                   **{**SMALL, **changes})


@pytest.mark.parametrize("name", [n for n, row in ARMS.items() if not row.unavailable])
def test_every_available_arm_builds_its_criterion(name: str) -> None:
    row = arm(name)
    model = _model(row.backbone, **row.model_changes)
    options = {"snr_gamma": 5.0, "masked_draws": "independent", "align_encoder": tiny_encoder(16)}
    criterion = build_arm_criterion(row, model, options)
    expected_objective = (
        EDMObjective if row.backbone == "MaskDiT" else FlowMatching if "SiT" in name or "flow" in name else GaussianObjective
    )
    assert isinstance(criterion.objective, expected_objective)
    tokens = criterion.tokens
    if "TREAD" in name:  # routing wraps the model's own rule
        assert isinstance(tokens, RoutedRule) and tokens.route.ratio == 0.5
        tokens = tokens.rule
    masked = row.backbone in ("MDT", "MDTv2") and name != "MDTv2-nomask"
    expected_rule = MaskDiTDropRule if row.backbone == "MaskDiT" else MaskedTwoPassRule if masked else PlainRule
    assert isinstance(tokens, expected_rule)
    if name in ALIGN_ARMS:  # alignment on the plain pass, as an extra loss of the criterion
        (extra,) = criterion.extra_losses
        assert isinstance(extra, AlignmentLoss) and extra.pass_choice == "plain"
        assert extra.kind == ("dispersive" if "dispersive" in name else "repa")
        assert hasattr(model, "alignment_head") == (extra.kind == "repa")
    else:
        assert criterion.extra_losses == ()


@pytest.mark.parametrize("name", ALIGN_ARMS)
def test_alignment_arms_train_with_batch_targets_and_count_the_head(name: str) -> None:
    row = arm(name)
    model = _model(row.backbone, **row.model_changes)
    options = {"align_encoder": tiny_encoder(16)}  # 16 px: the 4 x 4 token grid of 8 px at patch 2
    criterion = build_arm_criterion(row, model, options)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)  # after the criterion: the projector trains
    x, y = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0)), torch.arange(4)
    key = "loss_dispersive" if "dispersive" in name else "loss_repa"
    for step in range(2):
        targets = criterion.batch_targets(x)  # as the training loop asks, once per step
        assert (targets is None) == ("dispersive" in name)
        draws = criterion.draw(model, x, torch.Generator().manual_seed(step))
        terms = criterion(model, x, y, draws, targets=targets)
        assert key in terms and torch.isfinite(terms[key]).all()
        optimizer.zero_grad()
        terms["loss"].mean().backward()
        optimizer.step()
    plain = step_flops(model, criterion.tokens)
    flops = step_flops(model, criterion.tokens, row.extra_forward_flops(model, options))
    if "dispersive" in name:  # weight-free: nothing added
        assert flops == plain and not hasattr(model, "alignment_head")
    else:  # the projector over every token, forward and backward
        head = model.alignment_head
        assert head.projector.layers[0].weight.grad is not None
        per_token = sum(m.weight.numel() for m in head.modules() if isinstance(m, torch.nn.Linear))
        assert alignment_head_flops(model, options) == per_token * model.num_tokens > 0
        assert flops == plain + BACKWARD_FACTOR * per_token * model.num_tokens


def test_inception_resolution_reaches_the_token_grid() -> None:
    assert inception_resolution(17) == 299  # the FID network's own size gives its 17 x 17 map
    assert inception_resolution(8) == 155  # the study's 16 px digits at patch 2
    with pytest.raises(ValueError, match="grid must be a positive integer, got 0"):
        inception_resolution(0)
    with pytest.raises(ValueError, match="alignment kind must be 'repa' or 'dispersive', got 'vicreg'"):
        alignment("vicreg")


@pytest.mark.parametrize("name", ["SiT-TREAD", "MaskDiT"])
def test_routing_and_dropping_arms_train_and_count_their_flops(name: str) -> None:
    row = arm(name)
    model = _model(row.backbone, **row.model_changes)
    criterion = build_arm_criterion(row, model, {})
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0)), torch.arange(4)
    for step in range(2):  # two steps: the loss is finite and reaches every trained weight
        draws = criterion.draw(model, x, torch.Generator().manual_seed(step))
        loss = criterion(model, x, y, draws)["loss"].mean()
        assert torch.isfinite(loss)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    n, flops = model.num_tokens, step_flops(model, criterion.tokens)
    if name == "SiT-TREAD":  # DiT's 7 blocks: half the tokens skip blocks 2 and 3 (the default span)
        assert draws.routes and criterion.tokens.route == Route(2, 4, 0.5)
        assert flops == BACKWARD_FACTOR * forward_flops(model, None, Route(2, 4, 0.5))
        assert flops < step_flops(model, PlainRule())
    else:  # the encoder sees the kept half; fewer FLOPs than the full pass
        assert draws.mask is not None and draws.mask.ids_keep.shape[1] == n // 2
        assert flops == BACKWARD_FACTOR * forward_flops(model, n // 2)
        assert flops < step_flops(model, MaskDiTDropRule(0.0))


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
    span = Route(1, 2, 0.5)  # routing in MDT's encoder: both passes routed
    routed = step_flops(mdt, RoutedRule(fixed, span))
    assert routed == BACKWARD_FACTOR * (forward_flops(mdt, None, span) + forward_flops(mdt, n - int(n * 0.5), span))

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
