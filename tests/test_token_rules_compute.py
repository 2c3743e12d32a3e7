"""Token rules that save compute: TREAD's routing over any rule's passes, MaskDiT's dropping; their draws, losses,
records and refusals."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import tiny_dit, tiny_mdt
from test_maskdit_properties import tiny_maskdit

from mdtblocks.criterion import Criterion, criterion_from_record
from mdtblocks.losses.mae import MaskDiTLoss
from mdtblocks.masking import Route
from mdtblocks.objectives import EDMObjective, GaussianObjective
from mdtblocks.objectives.flow import FlowMatching
from mdtblocks.tokens import MaskDiTDropRule, MaskedTwoPassRule, PlainRule, RoutedRule


def _batch(model, b: int = 4, seed: int = 3):
    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    x = torch.randn(b, cfg.in_channels, cfg.input_size, cfg.input_size, generator=g)
    y = torch.randint(0, cfg.num_classes, (b,), generator=g)
    return x, y


def _loss(criterion: Criterion, model, seed: int = 0):
    x, y = _batch(model)
    model.train()
    draws = criterion.draw(model, x, torch.Generator().manual_seed(seed))
    return draws, criterion(model, x, y, draws)


@pytest.mark.parametrize(("make", "rule"), [(tiny_dit, PlainRule()), (tiny_mdt, MaskedTwoPassRule(0.3, 0.2))])
def test_a_zero_ratio_route_is_the_plain_rule_exactly(make, rule) -> None:
    model = make(depth=5) if make is tiny_dit else make()
    plain = Criterion(GaussianObjective(), rule)
    routed = Criterion(GaussianObjective(), RoutedRule(rule, Route(1, 3, 0.0)))
    d0, t0 = _loss(plain, model)
    d1, t1 = _loss(routed, model)
    assert set(d1.routes) == {p.name for p in rule.passes(d1.mask)}
    assert torch.equal(d0.noise, d1.noise) and torch.equal(d0.t, d1.t)
    assert torch.equal(t0["loss"], t1["loss"])


def test_routing_leaves_every_other_draw_bit_identical_and_changes_the_loss() -> None:
    model = tiny_mdt()
    rule = MaskedTwoPassRule(0.3, 0.2)
    plain = Criterion(GaussianObjective(), rule)
    routed = Criterion(GaussianObjective(), RoutedRule(rule, Route(1, 3, 0.5)))
    d0, t0 = _loss(plain, model)
    d1, t1 = _loss(routed, model)
    for name in ("t", "noise", "drop_label", "masked_noise", "masked_drop_label"):
        assert torch.equal(getattr(d0, name), getattr(d1, name)), name
    assert torch.equal(d0.mask.ids_keep, d1.mask.ids_keep)
    assert not torch.equal(t0["loss"], t1["loss"])
    # MDT's masked pass: the encoder span routes among the tokens that pass keeps
    kept = d1.mask.ids_keep.shape[1]
    assert d1.routes["masked"].num_tokens == kept and d1.routes["unmasked"].num_tokens == model.num_tokens
    assert d1.rows(slice(0, 2)).routes["masked"].ids_keep.shape[0] == 2


def test_mdtv2_with_routing_trains_with_flow_matching() -> None:
    model = tiny_mdt(learn_sigma=False)
    criterion = Criterion(FlowMatching(), RoutedRule(MaskedTwoPassRule(0.3, 0.2), Route(1, 3, 0.5)))
    _, terms = _loss(criterion, model)
    terms["loss"].mean().backward()
    assert torch.isfinite(terms["loss"]).all()
    assert all(p.grad is not None for p in model.encoder.parameters())


def test_maskdit_dropping_is_maskdits_loss_on_the_rules_plan() -> None:
    model = tiny_maskdit()
    edm = EDMObjective()
    criterion = Criterion(edm, MaskDiTDropRule(0.5, 0.1))
    draws, terms = _loss(criterion, model)
    x, y = _batch(model)
    direct = MaskDiTLoss(2, edm, 0.1)(model, x, draws.t, draws.noise, draws.mask, {"y": criterion.label_dropout.apply(y, draws.drop_label, draws.null_class)})
    assert torch.equal(terms["loss"], direct["loss"]) and torch.equal(terms["mae"], direct["mae"])
    assert draws.mask.ids_keep.shape[1] == model.num_tokens // 2
    fine = Criterion(edm, MaskDiTDropRule(0.0))  # the unmasked fine-tune: plain EDM on every token
    d, t = _loss(fine, model)
    assert d.mask is None and torch.equal(t["loss"], Criterion(edm, PlainRule())(model, x, y, d)["loss"])


def test_maskdit_routes_among_the_tokens_its_encoder_keeps() -> None:
    model = tiny_maskdit(depth=3)
    edm = EDMObjective()
    dropped = Criterion(edm, MaskDiTDropRule(0.5))
    d0, t0 = _loss(dropped, model)
    d1, t1 = _loss(Criterion(edm, RoutedRule(MaskDiTDropRule(0.5), Route(1, 2, 0.5))), model)
    assert torch.equal(d0.mask.ids_keep, d1.mask.ids_keep) and torch.equal(d0.noise, d1.noise)
    assert d1.routes["dropped"].num_tokens == model.num_tokens // 2 and "mae" in t1
    assert not torch.equal(t0["loss"], t1["loss"])
    _, t2 = _loss(Criterion(edm, RoutedRule(MaskDiTDropRule(0.5), Route(1, 2, 0.0))), model)
    assert torch.equal(t0["loss"], t2["loss"])


def test_the_records_rebuild_the_rules() -> None:
    for rule, objective in (
        (RoutedRule(MaskedTwoPassRule(0.3, 0.2), Route(2, 4, 0.5)), GaussianObjective()),
        (MaskDiTDropRule(0.5, 0.1, False), EDMObjective(p_mean=-1.0)),
        (RoutedRule(PlainRule(), Route(1, 2, 0.25)), EDMObjective()),
    ):
        c = Criterion(objective, rule)
        assert criterion_from_record(json.loads(json.dumps(c.to_record()))) == c


def test_combinations_that_make_no_sense_are_refused() -> None:
    dit = tiny_dit()
    x, _ = _batch(dit)
    with pytest.raises(ValueError, match="fills the dropped ones back.*DiT runs every block"):
        Criterion(EDMObjective(), MaskDiTDropRule()).draw(dit.train(), x, torch.Generator())
    m = tiny_maskdit()
    with pytest.raises(ValueError, match="does not fit the model's 2 blocks"):  # MaskDiT routes within its encoder
        Criterion(EDMObjective(), RoutedRule(MaskDiTDropRule(), Route(1, 3))).draw(m.train(), _batch(m)[0], torch.Generator())
    with pytest.raises(ValueError, match="routing needs a backbone that takes route="):
        Criterion(EDMObjective(), RoutedRule(PlainRule(), Route(1, 2))).draw(torch.nn.Linear(1, 1), _batch(m)[0], torch.Generator())
    mdt = tiny_mdt()
    with pytest.raises(ValueError, match="span"):  # across MDT's encoder and decoder
        Criterion(GaussianObjective(), RoutedRule(PlainRule(), Route(3, 5))).draw(mdt.train(), _batch(mdt)[0], torch.Generator())
    with pytest.raises(ValueError, match="RoutedRule of a RoutedRule"):
        RoutedRule(RoutedRule(PlainRule(), Route(1, 2)), Route(1, 2))
