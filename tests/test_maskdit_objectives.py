"""MaskDiT's dropping with every objective: per-element terms, the loss on the visible patches only, the backbones it
needs (MaskDiT, MDT) and the ones it refuses (DiT, SiT), and objectives without per-element terms refused."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from helpers import tiny_dit, tiny_mdt
from test_maskdit_properties import overwrite_dropped, tiny_maskdit

from mdtblocks import SiT
from mdtblocks.criterion import Criterion
from mdtblocks.diffusion.likelihood import mean_flat
from mdtblocks.losses import MaskDiTLoss
from mdtblocks.masking import MaskSampler
from mdtblocks.objectives import EDMObjective, GaussianObjective
from mdtblocks.objectives.flow import FlowMatching
from mdtblocks.tokens import MaskDiTDropRule

OBJECTIVES = {
    "gaussian-learned-sigma": GaussianObjective(),
    "gaussian-rescaled-vb": GaussianObjective(rescale_learned_sigmas=True),
    "gaussian-min-snr-fixed-sigma": GaussianObjective(learn_sigma=False, snr_gamma=5),
    "gaussian-kl": GaussianObjective(use_kl=True),
    "gaussian-v": GaussianObjective(predict="v"),
    "flow": FlowMatching(),
    "flow-cosine": FlowMatching(cosine_weight=0.5),
    "flow-noise-likelihood": FlowMatching(prediction="noise", loss_weight="likelihood"),
    "edm": EDMObjective(),
}


def _model_for(objective):
    return tiny_maskdit(learn_sigma=bool(getattr(objective, "learn_sigma", False)))


def _draws(objective, model, b: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    x = torch.randn(b, cfg.in_channels, cfg.input_size, cfg.input_size, generator=g)
    y = torch.randint(0, cfg.num_classes, (b,), generator=g)
    times = objective.draw_times(b, g)
    if isinstance(objective, GaussianObjective):
        times[0] = 0  # the vb term's decoder NLL
    return x, y, times, objective.draw_noise(x, g), MaskSampler(0.5)(b, model.num_tokens, generator=g)


@pytest.mark.parametrize("name", OBJECTIVES)
def test_pointwise_terms_average_to_the_objectives_losses(name: str) -> None:
    objective = OBJECTIVES[name]
    model = _model_for(objective)
    x, y, times, noise, _ = _draws(objective, model)
    expected = objective.losses(model, x, times, noise, {"y": y})
    pointwise = objective.pointwise_losses(model, x, times, noise, {"y": y})
    assert pointwise.noisy.shape == pointwise.reconstruction.shape == x.shape
    got = pointwise.reduce(mean_flat)
    assert set(expected) <= set(got)
    for term, value in expected.items():
        torch.testing.assert_close(got[term], value, rtol=1e-5, atol=1e-6, msg=f"{name}: {term}")


class _OverwriteDropped(torch.nn.Module):
    """The backbone, with its output on the dropped patches replaced by other (finite) values."""

    def __init__(self, model: torch.nn.Module, mask: torch.Tensor) -> None:
        super().__init__()
        self.model, self.mask = model, mask

    def forward(self, x: torch.Tensor, t: torch.Tensor, **kwargs) -> torch.Tensor:
        out = self.model(x, t, **kwargs)
        other = 3.0 * torch.randn(out.shape, generator=torch.Generator().manual_seed(7)) + 1.0
        return overwrite_dropped(out, self.mask, self.model.config.patch_size, other)


@pytest.mark.parametrize("name", OBJECTIVES)
def test_the_visible_loss_ignores_the_networks_output_on_dropped_tokens(name: str) -> None:
    objective = OBJECTIVES[name]
    model = _model_for(objective)
    x, y, times, noise, plan = _draws(objective, model)
    loss = MaskDiTLoss(model.config.patch_size, objective, mae_weight=0.1)
    plain = loss(model, x, times, noise, plan, {"y": y})
    changed = loss(_OverwriteDropped(model, plan.mask), x, times, noise, plan, {"y": y})
    named = set(plain) - {"loss", "mae"}
    assert "denoise" in named and len(named) >= 2  # the sum and the objective's own terms
    for term in named:
        assert torch.equal(plain[term], changed[term]), f"{name}: {term} read a dropped token's output"
    assert not torch.equal(plain["mae"], changed["mae"])  # only the MAE term looks at the dropped patches
    torch.testing.assert_close(plain["loss"], plain["denoise"] + 0.1 * plain["mae"])
    # and the visible mean is not the mean over every patch
    everywhere = objective.losses(model, x, times, noise, {"y": y, "ids_keep": plan.ids_keep})["loss"]
    assert not torch.allclose(everywhere, plain["denoise"])


@pytest.mark.parametrize("objective", [GaussianObjective(), FlowMatching(), EDMObjective()], ids=["gaussian", "flow", "edm"])
def test_mdt_drops_tokens_through_its_side_interpolater(objective) -> None:
    model = tiny_mdt(learn_sigma=isinstance(objective, GaussianObjective)).train()
    x, y, *_ = _draws(objective, model, b=4)
    criterion = Criterion(objective, MaskDiTDropRule(0.5))
    draws = criterion.draw(model, x, torch.Generator().manual_seed(0))
    terms = criterion(model, x, y, draws)
    assert draws.mask.ids_keep.shape[1] == model.num_tokens // 2 and "mae" in terms
    terms["loss"].mean().backward()
    assert torch.isfinite(terms["loss"]).all()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.side_interpolater.parameters())


def _tiny_sit() -> SiT:
    return SiT(tiny_dit().config)


@pytest.mark.parametrize("make", [tiny_dit, _tiny_sit], ids=["DiT", "SiT"])
def test_dit_and_sit_cannot_drop_tokens(make: Callable[[], torch.nn.Module]) -> None:
    model = make().train()
    x, *_ = _draws(EDMObjective(), model)
    with pytest.raises(ValueError, match=r"runs every block on the tokens it is given and returns no output for dropped patches"):
        Criterion(EDMObjective(), MaskDiTDropRule(0.5)).draw(model, x, torch.Generator())
    Criterion(EDMObjective(), MaskDiTDropRule(0.0)).draw(model, x, torch.Generator())  # no dropping: the plain step


class _NoPointwise:
    """An objective with the plain interface only (no per-element terms)."""

    kind = "toy"
    samplers = ()

    def draw_times(self, n, generator):
        return torch.rand(n, generator=generator)

    def draw_noise(self, x_start, generator):
        return torch.randn(x_start.shape, generator=generator)

    def losses(self, net, x_start, times, noise, model_kwargs):
        return {"loss": mean_flat((net(x_start + noise, times, **model_kwargs) - x_start) ** 2)}

    def data_fraction(self, times):
        return times

    def sample(self, net, noise, model_kwargs, *, sampler, num_steps, generator=None, progress=False, **options):
        raise NotImplementedError

    def to_record(self):
        return {"kind": self.kind}


def test_an_objective_without_per_element_terms_is_refused() -> None:
    with pytest.raises(ValueError, match=r"the 'toy' objective has none"):
        Criterion(_NoPointwise(), MaskDiTDropRule(0.5))
    with pytest.raises(TypeError, match="PointwiseObjective|pointwise_losses"):  # the type-check hook, or the loss's check
        MaskDiTLoss(2, _NoPointwise())
