"""The MDT training objective: unmasked plus masked loss, explicit randomness, no DiT masking."""

from __future__ import annotations

import pytest
import torch

from mdtblocks import DiT, MaskedDiffusionObjective, MaskedDiffusionTransformer, create_diffusion
from mdtblocks.diffusion import StepRandomness
from mdtblocks.masking import plan_from_ids_keep


def randomize(model):
    # Fresh models output zeros (adaLN-Zero); random weights make every pass distinct.
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.08)
    return model.eval()


SMALL = dict(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=4, num_heads=2, num_classes=5)


@pytest.fixture(scope="module")
def mdt():
    torch.manual_seed(0)
    return randomize(MaskedDiffusionTransformer.from_preset("MDTv2-S/2", decode_layer=2, **SMALL))


@pytest.fixture(scope="module")
def dit():
    torch.manual_seed(0)
    return randomize(DiT.from_preset("DiT-S/2", **SMALL))


def batch(b=3):
    g = torch.Generator().manual_seed(1)
    return torch.randn(b, 4, 8, 8, generator=g), torch.randint(0, 5, (b,), generator=g)


def test_objective_sums_unmasked_and_masked_terms(mdt):
    x, y = batch()
    objective = MaskedDiffusionObjective(create_diffusion(snr_gamma=5.0))
    out = objective(mdt, x, y, objective.draw(mdt, x, torch.Generator().manual_seed(0)))
    for key in ("loss", "loss_unmasked", "loss_masked", "mse", "vb", "mse_masked", "vb_masked", "t"):
        assert out[key].shape == (3,), key
    torch.testing.assert_close(out["loss"], out["loss_unmasked"] + out["loss_masked"])
    torch.testing.assert_close(out["loss_unmasked"], out["mse"] + out["vb"])
    assert not torch.allclose(out["loss_unmasked"], out["loss_masked"])


@pytest.mark.parametrize("masked_draws", ["shared", "independent"])
def test_objective_terms_equal_training_losses(mdt, masked_draws):
    # Same t in both passes; the masked pass is training_losses with ids_keep and
    # (independent) its own noise and label drops, (shared) those of the plain pass.
    mdt.eval()
    x, y = batch()
    diffusion = create_diffusion()
    t = torch.tensor([5, 500, 999])
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    noise_m = torch.randn(x.shape, generator=torch.Generator().manual_seed(4))
    ids_keep = torch.stack([torch.randperm(16, generator=torch.Generator().manual_seed(i))[:11] for i in range(3)])
    plan = plan_from_ids_keep(ids_keep, 16)
    no_drops, drops_m = torch.zeros(3, dtype=torch.bool), torch.tensor([True, False, True])
    randomness = StepRandomness(t, noise, no_drops, plan, null_class=5, masked_noise=noise_m, masked_drop_label=drops_m)
    out = MaskedDiffusionObjective(diffusion, masked_draws=masked_draws)(mdt, x, y, randomness)
    full = diffusion.training_losses(mdt, x, t, {"y": y}, noise=noise)
    if masked_draws == "independent":
        y_m = torch.where(drops_m, 5, y)
        masked = diffusion.training_losses(mdt, x, t, {"y": y_m, "ids_keep": ids_keep}, noise=noise_m)
    else:
        masked = diffusion.training_losses(mdt, x, t, {"y": y, "ids_keep": ids_keep}, noise=noise)
    torch.testing.assert_close(out["loss_unmasked"], full["loss"])
    torch.testing.assert_close(out["loss_masked"], masked["loss"])


def test_objective_is_reproducible_from_the_generator(mdt):
    mdt.train()
    x, y = batch()
    objective = MaskedDiffusionObjective(create_diffusion())
    a = objective(mdt, x, y, objective.draw(mdt, x, torch.Generator().manual_seed(7)))
    b = objective(mdt, x, y, objective.draw(mdt, x, torch.Generator().manual_seed(7)))
    c = objective(mdt, x, y, objective.draw(mdt, x, torch.Generator().manual_seed(8)))
    torch.testing.assert_close(a["loss"], b["loss"])
    assert not torch.allclose(a["loss"], c["loss"])
    mdt.eval()


def test_objective_backpropagates(mdt):
    x, y = batch()
    mdt.zero_grad()
    objective = MaskedDiffusionObjective(create_diffusion())
    out = objective(mdt, x, y, objective.draw(mdt, x, torch.Generator().manual_seed(0)))
    out["loss"].mean().backward()
    grads = [p.grad for p in mdt.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    mdt.zero_grad()


def test_objective_dit_has_no_masked_term(dit):
    x, y = batch()
    objective = MaskedDiffusionObjective(create_diffusion())
    out = objective(dit, x, y, objective.draw(dit, x, torch.Generator().manual_seed(0)))
    assert "loss_masked" not in out
    torch.testing.assert_close(out["loss"], out["loss_unmasked"])


def test_objective_under_bf16_autocast_returns_fp32(mdt):
    x, y = batch()
    objective = MaskedDiffusionObjective(create_diffusion(snr_gamma=5.0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = objective(mdt, x, y, objective.draw(mdt, x, torch.Generator().manual_seed(0)))
    assert out["loss"].dtype == torch.float32
    assert torch.isfinite(out["loss"]).all()


def test_objective_needs_a_generator_for_what_it_draws(mdt):
    x, y = batch()
    objective = MaskedDiffusionObjective(create_diffusion())
    with pytest.raises(TypeError, match="generator"):
        objective.draw(mdt, x, generator=0)
    with pytest.raises(TypeError, match="must draw t, noise, mask"):
        objective.draw(mdt, x, generator=None)
    # Everything given: no generator needed.
    plan = plan_from_ids_keep(torch.arange(10).expand(3, 10), 16)
    drops = torch.zeros(3, dtype=torch.bool)
    given = StepRandomness(torch.tensor([1, 2, 3]), torch.zeros_like(x), drops, plan, 5, torch.ones_like(x), drops)
    out = objective(mdt, x, y, given)
    assert out["loss"].shape == (3,)


def test_training_path_reads_no_tensor_values():
    # On the meta device every value read (item, int, bool) raises, so running the whole objective
    # there proves it has no host sync: only the CPU generator's own draws are read.
    meta = torch.device("meta")
    model = MaskedDiffusionTransformer.from_preset("MDTv2-S/2", decode_layer=2, **SMALL).to(meta).train()
    model.check_values = False  # the model's own input checks read labels; the trainer turns them off
    x = torch.empty(3, 4, 8, 8, device=meta)
    y = torch.zeros(3, dtype=torch.long, device=meta)
    objective = MaskedDiffusionObjective(create_diffusion(snr_gamma=5.0))
    out = objective(model, x, y, objective.draw(model, x, torch.Generator().manual_seed(0)))
    assert out["loss"].device == meta and out["loss"].shape == (3,)
    assert {"loss_masked", "vb_masked"} <= set(out)
    with pytest.raises(Exception):
        int(out["t"][0])  # meta tensors really cannot be read


def test_objective_runs_wrapped_models_with_the_backbones_mask(mdt):
    class Wrapper(torch.nn.Module):
        def __init__(self, inner, attr):
            super().__init__()
            setattr(self, attr, inner)
            self.attr = attr

        def forward(self, *args, **kwargs):
            return getattr(self, self.attr)(*args, **kwargs)

    wrapped = Wrapper(Wrapper(Wrapper(mdt, "module"), "_orig_mod"), "module")
    x, y = batch()
    objective = MaskedDiffusionObjective(create_diffusion())
    # The mask sampler is passed in with the backbone (draw), not looked up through the wrappers.
    a = objective(wrapped, x, y, objective.draw(mdt, x, torch.Generator().manual_seed(4)))
    b = objective(mdt, x, y, objective.draw(mdt, x, torch.Generator().manual_seed(4)))
    assert "loss_masked" in a
    torch.testing.assert_close(a["loss"], b["loss"])
