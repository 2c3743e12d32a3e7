"""Representation alignment: the feature tap on every backbone and pass, REPA's loss properties, the Dispersive loss."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import inputs, tiny_dit, tiny_mdt
from hypothesis import given, settings
from hypothesis import strategies as st

from mdtblocks.alignment import (
    DispersiveLoss,
    FeatureTap,
    Projector,
    RepaLoss,
    gather_targets,
    negative_cosine,
)
from mdtblocks.masking import MaskSampler

SETTINGS = settings(max_examples=20, deadline=None)


# --- the tap ---------------------------------------------------------------------------------
@pytest.mark.parametrize("v2", [True, False])
def test_tap_sees_kept_tokens_in_the_encoder_and_all_in_the_decoder(v2: bool) -> None:
    model = tiny_mdt(v2)
    x, t, y = inputs(model, batch=3)
    plan = MaskSampler(0.5)(3, model.num_tokens, generator=torch.Generator().manual_seed(0))
    enc, total = model.kept_only_blocks, len(model.trunk())
    assert enc == model.config.encoder_depth and total == model.config.depth
    with FeatureTap(model, enc) as inner, FeatureTap(model, total) as outer:
        model(x, t, y, ids_keep=plan.ids_keep)
        assert inner.pop().shape == (3, plan.num_kept, model.config.hidden_size)
        assert outer.pop().shape == (3, model.num_tokens, model.config.hidden_size)
        assert inner.ids_for(plan.ids_keep) is plan.ids_keep and outer.ids_for(plan.ids_keep) is None
        model(x, t, y)  # the plain pass: every block sees all tokens
        assert inner.pop().shape == outer.pop().shape == (3, model.num_tokens, model.config.hidden_size)
        assert inner.ids_for(None) is None


def test_tap_on_dit_records_the_block_output_with_its_graph() -> None:
    model = tiny_dit(depth=3).train()
    x, t, y = inputs(model)
    with FeatureTap(model, 2) as tap:
        model(x, t, y)
        tokens = tap.pop()
    h = model.x_embedder(x) + model.pos_embed
    c = model.condition(t, y)
    for blk in model.blocks[:2]:
        h = blk(h, c)
    torch.testing.assert_close(tokens, h)
    assert tokens.requires_grad
    tokens.square().sum().backward()
    assert model.blocks[1].attn.qkv.weight.grad is not None and model.blocks[2].attn.qkv.weight.grad is None
    assert not tap.kept_only and tap.ids_for(torch.zeros(2, 3, dtype=torch.long)) is None


def test_tap_pop_and_remove() -> None:
    model = tiny_dit()
    x, t, y = inputs(model)
    tap = FeatureTap(model, 1)
    with pytest.raises(RuntimeError, match="recorded nothing"):
        tap.pop()
    model(x, t, y)
    tap.pop()
    with pytest.raises(RuntimeError, match="recorded nothing"):
        tap.pop()  # a stale record is never handed out twice
    tap.remove()
    tap.remove()
    model(x, t, y)
    with pytest.raises(RuntimeError):
        tap.pop()


@pytest.mark.parametrize("depth", [0, -1, 3])
def test_depth_past_the_network_is_refused(depth: int) -> None:
    with pytest.raises(ValueError, match=r"depth .* past DiT's 2 blocks"):
        FeatureTap(tiny_dit(), depth)
    with pytest.raises(ValueError, match="past MaskedDiffusionTransformer's 5 blocks"):
        tiny_mdt().block_at(6)
    with pytest.raises(TypeError, match="needs a DiffusionBackbone"):
        FeatureTap(torch.nn.Linear(2, 2), 1)


@pytest.mark.parametrize("depth", [2.0, True, "1"])
def test_depth_of_the_wrong_type_is_refused(depth: object) -> None:
    # ValueError from the library's own check; under the suite's jaxtyping hook the annotation answers first (a TypeError)
    with pytest.raises((ValueError, TypeError), match="depth"):
        tiny_dit().block_at(depth)  # type: ignore[arg-type]


# --- the masked-pass gather ------------------------------------------------------------------------
@SETTINGS
@given(ratio=st.floats(0.0, 0.9), seed=st.integers(0, 2**31 - 1), v2=st.booleans())
def test_masked_pass_gather_picks_the_kept_tokens_targets(ratio: float, seed: int, v2: bool) -> None:
    """With the first block at its adaLN-Zero init (an identity), the masked pass's tapped tokens are the plain
    pass's in ids_keep order; targets made from the plain tokens then align exactly only if gathered by ids_keep."""
    model = tiny_mdt(v2, seed=seed % 100)
    model.encoder[0].reset_parameters()
    x, t, y = inputs(model, batch=3, seed=seed)
    plan = MaskSampler(ratio)(3, model.num_tokens, generator=torch.Generator().manual_seed(seed))
    loss = RepaLoss(model.config.hidden_size, 7, coeff=0.5, projector_dim=16)
    with FeatureTap(model, 1) as tap, torch.no_grad():
        model(x, t, y)
        plain = tap.pop()
        model(x, t, y, ids_keep=plan.ids_keep)
        kept = tap.pop()
        torch.testing.assert_close(kept, gather_targets(plain, plan.ids_keep))
        targets = loss.projector(plain)  # one target per grid position: the projection of that position's token
        value = loss(kept, targets, tap.ids_for(plan.ids_keep))
    torch.testing.assert_close(value, torch.full((3,), -0.5), atol=1e-5, rtol=0)
    if plan.num_kept > 1:  # any other order of the targets is worse
        shuffled = loss(kept, targets, plan.ids_keep.flip(1))
        assert bool((shuffled > -0.5 + 1e-4).any())


def test_gather_targets_rows() -> None:
    targets = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(2, 5, 3)
    ids = torch.tensor([[4, 0], [2, 3]])
    out = gather_targets(targets, ids)
    assert torch.equal(out[0], targets[0, [4, 0]]) and torch.equal(out[1], targets[1, [2, 3]])
    with pytest.raises((ValueError, TypeError), match="ids_keep"):
        gather_targets(targets, ids[:1])


# --- REPA's loss -------------------------------------------------------------------------------------
@SETTINGS
@given(b=st.integers(1, 4), n=st.integers(1, 9), scale=st.floats(1e-3, 1e3), coeff=st.floats(0.0, 2.0), seed=st.integers(0, 2**31 - 1))
def test_loss_is_minimal_at_the_targets_up_to_scale(b: int, n: int, scale: float, coeff: float, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    loss = RepaLoss(6, 5, coeff=coeff, projector_dim=8)
    tokens = torch.randn(b, n, 6, generator=g)
    with torch.no_grad():
        at_minimum = loss(tokens, scale * loss.projector(tokens))
        elsewhere = loss(tokens, torch.randn(b, n, 5, generator=g))
    torch.testing.assert_close(at_minimum, torch.full((b,), -coeff), atol=1e-5, rtol=0)
    assert bool((elsewhere >= at_minimum - 1e-6).all())


@SETTINGS
@given(scale=st.floats(1e-3, 1e3), shape=st.tuples(st.integers(1, 3), st.integers(1, 6)), seed=st.integers(0, 2**31 - 1))
def test_loss_is_invariant_to_the_target_scale(scale: float, shape: tuple[int, int], seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    loss = RepaLoss(4, 3, projector_dim=8)
    tokens, targets = torch.randn(*shape, 4, generator=g), torch.randn(*shape, 3, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(loss(tokens, scale * targets), loss(tokens, targets), atol=1e-6, rtol=1e-5)
        # per-token scales too: each token's cosine ignores its own target's norm
        per_token = torch.rand(*shape, 1, generator=g) * 10 + 0.1
        torch.testing.assert_close(loss(tokens, per_token * targets), loss(tokens, targets), atol=1e-6, rtol=1e-5)


def test_loss_is_per_sample_and_trains_only_the_projector_and_tokens() -> None:
    loss = RepaLoss(4, 3, projector_dim=8)
    tokens = torch.randn(3, 5, 4, requires_grad=True)
    targets = torch.randn(3, 5, 3, requires_grad=True)
    value = loss(tokens, targets)
    assert value.shape == (3,) and value.dtype == torch.float32
    alone = loss(tokens[1:2], targets[1:2])
    torch.testing.assert_close(value[1:2], alone)
    value.sum().backward()
    assert tokens.grad is not None and targets.grad is None
    assert all(p.grad is not None for p in loss.projector.parameters())


def test_loss_refuses_mismatched_tokens() -> None:
    loss = RepaLoss(4, 3, projector_dim=8)
    with pytest.raises(ValueError, match="need ids_keep"):
        loss(torch.randn(2, 3, 4), torch.randn(2, 5, 3))
    with pytest.raises((ValueError, TypeError)):  # jaxtyping's batch check answers first under the suite's hook
        loss(torch.randn(2, 3, 4), torch.randn(3, 3, 3))
    with pytest.raises(ValueError, match="width 5"):
        loss(torch.randn(2, 3, 5), torch.randn(2, 3, 3))
    with pytest.raises(ValueError, match="coeff"):
        RepaLoss(4, 3, coeff=-1.0)


def test_projector_layout_and_checkpoint() -> None:
    proj = Projector(16, 12)  # REPA's default: 3 linears, SiLU, hidden 2048
    linears = [m for m in proj.layers if isinstance(m, torch.nn.Linear)]
    assert [tuple(m.weight.shape) for m in linears] == [(2048, 16), (2048, 2048), (12, 2048)]
    assert sorted(proj.state_dict()) == [f"layers.{i}.{w}" for i in (0, 2, 4) for w in ("bias", "weight")]
    assert sum(isinstance(m, torch.nn.SiLU) for m in proj.layers) == 2
    assert len(Projector(4, 3, hidden_dim=5, num_layers=1).layers) == 1
    with pytest.raises(ValueError, match="num_layers"):
        Projector(4, 3, num_layers=0)


def test_projector_is_not_part_of_the_exported_backbone(tmp_path) -> None:
    model = tiny_dit()
    loss = RepaLoss(model.config.hidden_size, 7, projector_dim=8)
    with FeatureTap(model, 1):
        model.save_pretrained(tmp_path)
    from safetensors.torch import load_file

    keys = load_file(str(tmp_path / "model.safetensors")).keys()
    assert not any("projector" in k for k in keys) and set(keys) == set(model.state_dict())
    assert set(loss.state_dict()) == {f"projector.layers.{i}.{w}" for i in (0, 2, 4) for w in ("weight", "bias")}


def test_negative_cosine_range() -> None:
    a = torch.randn(2, 4, 3)
    torch.testing.assert_close(negative_cosine(a, a), torch.full((2,), -1.0))
    torch.testing.assert_close(negative_cosine(a, -a), torch.full((2,), 1.0))


# --- the Dispersive loss -----------------------------------------------------------------------------
def reference_dispersive(z: torch.Tensor, tau: float) -> torch.Tensor:
    """The batch loss written out pair by pair in float64."""
    z = z.double().reshape(z.shape[0], -1)
    b, d = z.shape
    terms = [math.exp(-float((z[i] - z[j]).square().sum()) / d / tau) for i in range(b) for j in range(b)]
    return torch.tensor(math.log(sum(terms) / len(terms)), dtype=torch.float64)


@SETTINGS
@given(b=st.integers(1, 5), n=st.integers(1, 4), tau=st.floats(0.1, 4.0), seed=st.integers(0, 2**31 - 1))
def test_dispersive_matches_its_definition(b: int, n: int, tau: float, seed: int) -> None:
    z = torch.randn(b, n, 3, generator=torch.Generator().manual_seed(seed))
    out = DispersiveLoss(coeff=1.0, temperature=tau)(z)
    assert out.shape == (b,) and bool((out == out[0]).all())
    torch.testing.assert_close(out[0].double(), reference_dispersive(z, tau), atol=1e-5, rtol=1e-5)


def test_dispersive_prefers_spread_representations_and_pushes_them_apart() -> None:
    loss = DispersiveLoss()
    z = torch.randn(6, 4, 8, generator=torch.Generator().manual_seed(0))
    assert float(loss(z)[0]) > float(loss(3 * z)[0])
    torch.testing.assert_close(loss(z.mean(0, keepdim=True).expand(6, 4, 8))[0], torch.tensor(0.0))  # no spread: log 1
    torch.testing.assert_close(loss(z[:1]), torch.zeros(1))  # nothing to disperse from
    torch.testing.assert_close(loss(z[torch.randperm(6)]), loss(z))
    z = z.clone().requires_grad_(True)
    loss(z).mean().backward()
    step = z - 0.5 * z.grad  # a gradient step moves the samples apart
    spread = lambda v: torch.pdist(v.reshape(6, -1)).mean()
    assert float(spread(step.detach())) > float(spread(z.detach()))


def test_dispersive_refuses_bad_options() -> None:
    with pytest.raises(ValueError, match="temperature"):
        DispersiveLoss(temperature=0.0)
    with pytest.raises(ValueError, match="coeff"):
        DispersiveLoss(coeff=-1.0)
    with pytest.raises((ValueError, TypeError), match="tokens"):
        DispersiveLoss()(torch.randn(3))


def test_tap_on_maskdit_encoder_and_decoder() -> None:
    from mdtblocks import MaskDiT

    model = MaskDiT.from_preset("MaskDiT-S/2", input_size=8, in_channels=3, num_classes=5, depth=2, hidden_size=32,
                                num_heads=2, decoder_hidden_size=16, decoder_depth=1, decoder_num_heads=2).eval()
    x, t, y = inputs(model, batch=2)
    plan = model.mask_sampler(2, model.num_tokens, generator=torch.Generator().manual_seed(0))
    with FeatureTap(model, 2) as enc, FeatureTap(model, 3) as dec:
        model(x, t.float(), y, ids_keep=plan.ids_keep)
        assert enc.pop().shape == (2, plan.num_kept, 32) and enc.ids_for(plan.ids_keep) is plan.ids_keep
        assert dec.pop().shape == (2, model.num_tokens, 16) and dec.ids_for(plan.ids_keep) is None
    with pytest.raises(ValueError, match="past MaskDiT's 3 blocks"):
        model.block_at(4)
