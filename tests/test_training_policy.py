"""Training policy lives with the criterion: the token rule owns the mask ratios, LabelDropout the label drops.

The model configs keep ``mask_ratio``, ``mask_ratio_range`` and ``class_dropout_prob`` as the
legacy record of the published rule; one function maps the mask fields to a rule, and
``model.mask_sampler`` / ``model.drop_labels`` are compatibility views of that record.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from mdtblocks import DiT, MaskDiT, MaskedDiffusionTransformer, MDTConfig
from mdtblocks.blocks import LabelEmbedder, ZeroNullLabelEmbedder
from mdtblocks.criterion import LabelDropout, read_criterion, rule_of_model
from mdtblocks.evaluation.arms import arm, build_arm_criterion
from mdtblocks.models.config import config_from_dict
from mdtblocks.tokens import MaskDiTDropRule, MaskedTwoPassRule, PlainRule, rule_of_config
from mdtblocks.training.recipe.axes import recipe_tokens

SMALL = dict(input_size=8, in_channels=3, num_classes=5, hidden_size=32, num_heads=2)


def mdt(preset: str = "MDTv2-S/2", **changes) -> MaskedDiffusionTransformer:
    return MaskedDiffusionTransformer.from_preset(preset, depth=3, decode_layer=1, **{**SMALL, **changes})


def maskdit(**changes) -> MaskDiT:
    return MaskDiT.from_preset("MaskDiT-S/2", depth=1, decoder_hidden_size=32, decoder_depth=1, decoder_num_heads=2,
                               **{**SMALL, **changes})


def dit() -> DiT:
    return DiT.from_preset("DiT-S/2", depth=1, **SMALL)


def test_the_config_records_the_published_rule() -> None:
    assert rule_of_config(mdt().config) == MaskedTwoPassRule(0.3, 0.2)
    assert rule_of_config(mdt("MDT-S/2").config, "shared", 2.0) == MaskedTwoPassRule(0.3, 0.0, 2.0, "shared")
    assert rule_of_config(mdt(mask_ratio=None).config) == PlainRule()
    assert rule_of_config(maskdit().config) == MaskDiTDropRule(0.5, mae_weight=0.1)
    assert rule_of_config(maskdit(mask_ratio=None).config) == MaskDiTDropRule(0.0, mae_weight=0.1)
    assert rule_of_config(dit().config) == PlainRule()
    # The dict form (a checkpoint's or an old run's config.json) maps the same; "class" wins.
    assert rule_of_config(mdt().config.to_dict()) == MaskedTwoPassRule(0.3, 0.2)
    assert rule_of_config({"class": "DiT", "mask_ratio": 0.3}) == PlainRule()
    with pytest.raises(TypeError, match="needs a model config or its dict, got int"):
        rule_of_config(3)
    with pytest.raises(ValueError):
        rule_of_config({"mask_ratio": 0.9, "mask_ratio_range": 0.2})


def test_an_old_config_dict_with_the_mask_fields_still_loads_and_maps() -> None:
    old = {**mdt().config.to_dict(), "mask_ratio": 0.4, "mask_ratio_range": 0.1}  # e.g. a run trained at 0.4
    model = MaskedDiffusionTransformer(config_from_dict(MDTConfig, old))
    assert rule_of_model(model, "shared") == MaskedTwoPassRule(0.4, 0.1, masked_draws="shared")
    assert read_criterion({"model_config": old}).tokens == MaskedTwoPassRule(0.4, 0.1)
    with pytest.raises(ValueError, match="a MaskDiT run records its criterion"):
        read_criterion({"model_config": {"class": "MaskDiT", **maskdit().config.to_dict()}})


@pytest.mark.parametrize("build", [mdt, lambda: mdt("MDT-S/2"), lambda: mdt(mask_ratio=None), maskdit,
                                   lambda: maskdit(mask_ratio=0.0), dit])
def test_mask_sampler_is_a_view_of_the_recorded_rule(build) -> None:
    model = build()
    assert model.mask_sampler == rule_of_config(model.config).sampler
    with pytest.raises(AttributeError):
        model.mask_sampler = None  # read-only: nothing can set a training policy on the model


def test_the_ratio_flags_set_the_rule_not_the_model() -> None:
    flags = SimpleNamespace(mask_ratio=0.5, mask_ratio_range=None, masked_draws="independent", route=None, route_span=None)
    model = mdt()
    assert recipe_tokens(flags, model) == MaskedTwoPassRule(0.5, 0.2)
    assert model.config.mask_ratio == 0.3  # the preset's published ratio stays the model's record
    # The same rule the flags gave when they were written into the model config: the same draws.
    old_way = rule_of_model(mdt(mask_ratio=0.5))
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(recipe_tokens(flags, model).draw(4, 16, g1).ids_keep, old_way.draw(4, 16, g2).ids_keep)
    finetune = SimpleNamespace(**{**vars(flags), "mask_ratio": 0.0})
    assert recipe_tokens(finetune, maskdit()) == MaskDiTDropRule(0.0)  # MaskDiT's unmasked fine-tune
    with pytest.raises(ValueError, match="--mask-ratio-range does not apply to the 'maskdit_drop' token rule"):
        recipe_tokens(SimpleNamespace(**{**vars(flags), "mask_ratio_range": 0.1}), maskdit())


def test_the_arms_carry_their_rules() -> None:
    options = {"snr_gamma": None, "masked_draws": "shared"}
    v2 = mdt()
    assert build_arm_criterion(arm("MDTv2"), v2, options).tokens == rule_of_model(v2, "shared")  # as before
    assert build_arm_criterion(arm("MDT"), mdt("MDT-S/2"), options).tokens == MaskedTwoPassRule(0.3, masked_draws="shared")
    nomask = arm("MDTv2-nomask")
    assert nomask.model_changes == {} and build_arm_criterion(nomask, v2, options).tokens == PlainRule()
    assert build_arm_criterion(arm("MaskDiT"), maskdit(mask_ratio=0.2), options).tokens == MaskDiTDropRule(0.5)


def test_label_dropout_is_the_criterions() -> None:
    for cls in (LabelEmbedder, ZeroNullLabelEmbedder):
        assert not any(hasattr(cls, name) for name in ("drop", "draw_drops", "dropout_prob"))
    assert LabelEmbedder(3, 4).null_class == 3 and LabelEmbedder(3, 4, has_null=False).null_class is None
    with pytest.raises(TypeError, match="has_null"):  # (under the tests' type-check hook: its message)
        LabelEmbedder(3, 4, 0.1)  # the old dropout_prob argument
    model = mdt(class_dropout_prob=0.25)
    assert LabelDropout.of_model(model) == LabelDropout(0.25)  # the legacy field, mapped
    y = torch.arange(5).repeat(20)
    expected = LabelDropout(0.25).apply(y, LabelDropout(0.25).draw(100, torch.Generator().manual_seed(1)), 5)
    assert torch.equal(model.drop_labels(y, torch.Generator().manual_seed(1)), expected)
    assert mdt(class_dropout_prob=0.0).y_embedder.null_class is None
    with pytest.raises(TypeError, match="Linear has no config recording class_dropout_prob"):
        LabelDropout.of_model(torch.nn.Linear(1, 1))
    with pytest.raises(TypeError, match="Linear has no config recording a token rule"):
        rule_of_model(torch.nn.Linear(1, 1))
