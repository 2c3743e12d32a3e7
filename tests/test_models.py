"""Model contracts: shapes over random configurations, label dropout, files."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import inputs, randomize, tiny_dit, tiny_mdt
from mdtblocks import DiT, DiTConfig, MaskedDiffusionTransformer, MDTConfig, load_pretrained


@settings(max_examples=12, deadline=None)
@given(
    p=st.sampled_from([1, 2, 4]), grid=st.integers(1, 4), c=st.integers(1, 4), heads=st.sampled_from([1, 2]),
    depth=st.integers(1, 5), decode=st.integers(0, 2), v2=st.booleans(), sigma=st.booleans(), b=st.integers(1, 3),
)
def test_mdt_shapes_over_configs(p, grid, c, heads, depth, decode, v2, sigma, b):
    decode = min(decode, depth)
    cfg = MDTConfig(
        input_size=p * grid, patch_size=p, in_channels=c, hidden_size=16, depth=depth, num_heads=heads,
        num_classes=3, learn_sigma=sigma, decode_layer=decode, long_skip=v2, dense_skip=v2,
    )
    model = randomize(MaskedDiffusionTransformer(cfg)).eval()
    x, t, y = inputs(model, b)
    out = model(x, t, y)
    assert out.shape == (b, c * (2 if sigma else 1), p * grid, p * grid)
    plan = model.mask_sampler(b, model.num_tokens, generator=torch.Generator().manual_seed(0))
    assert model(x, t, y, ids_keep=plan.ids_keep).shape == out.shape
    assert len(model.encoder) + len(model.decoder) <= depth


@settings(max_examples=8, deadline=None)
@given(p=st.sampled_from([1, 2]), grid=st.integers(1, 4), c=st.integers(1, 4), depth=st.integers(0, 3), sigma=st.booleans())
def test_dit_shapes_over_configs(p, grid, c, depth, sigma):
    model = randomize(DiT(DiTConfig(input_size=p * grid, patch_size=p, in_channels=c, hidden_size=16, depth=depth, num_heads=2, num_classes=3, learn_sigma=sigma)))
    x, t, y = inputs(model, 2)
    assert model(x, t, y).shape == (2, c * (2 if sigma else 1), p * grid, p * grid)


def test_fresh_models_predict_zero_and_have_sincos_positions():
    for model in (MaskedDiffusionTransformer.from_preset("MDTv2-S/4", input_size=8, num_classes=4), DiT.from_preset("DiT-S/4", input_size=8, num_classes=4)):
        x, t, y = inputs(model)
        assert model(x, t, y).abs().max() == 0
        assert model.pos_embed.abs().sum() > 0
    assert not DiT.from_preset("DiT-S/4", input_size=8).pos_embed.requires_grad


def test_label_dropout_follows_the_generator():
    model = tiny_mdt()
    y = torch.arange(5).repeat(40)
    a = model.drop_labels(y, torch.Generator().manual_seed(3))
    b = model.drop_labels(y, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    dropped = (a == model.config.num_classes).float().mean()
    assert 0.03 < dropped < 0.25  # p = 0.1
    assert torch.equal(a[a != 5], y[a != 5])
    no_null = tiny_mdt(class_dropout_prob=0.0)
    assert torch.equal(no_null.drop_labels(y, torch.Generator()), y)


def test_forward_is_deterministic_in_train_mode():
    # label dropout never happens inside forward: train and eval give the same output
    model = tiny_mdt()
    x, t, y = inputs(model)
    with torch.no_grad():
        assert torch.equal(model.train()(x, t, y), model.eval()(x, t, y))


@pytest.mark.parametrize("build", [tiny_mdt, tiny_dit])
def test_save_and_load_pretrained_roundtrip(build, tmp_path):
    model = build(seed=5)
    model.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]
    loaded = type(model).from_pretrained(tmp_path / "m")
    again = load_pretrained(tmp_path / "m")
    x, t, y = inputs(model)
    with torch.no_grad():
        ref = model(x, t, y)
        assert ref.abs().max() > 0
        assert torch.equal(loaded(x, t, y), ref) and torch.equal(again(x, t, y), ref)
    assert loaded.config == model.config and not loaded.training


def test_from_pretrained_rejects_the_wrong_class(tmp_path):
    tiny_dit().save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="holds a DiT"):
        MaskedDiffusionTransformer.from_pretrained(tmp_path)


def test_attention_backend_can_change_on_load(tmp_path):
    model = tiny_mdt()
    model.save_pretrained(tmp_path)
    loaded = MaskedDiffusionTransformer.from_pretrained(tmp_path, attention_backend="math")
    x, t, y = inputs(model)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, t, y), model(x, t, y), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("build", [tiny_mdt, tiny_dit])
def test_bf16_autocast_trains_every_parameter(build):
    model = build().train()
    x, t, y = inputs(model)
    ids = model.mask_sampler(2, model.num_tokens, generator=torch.Generator().manual_seed(0)).ids_keep if model.mask_sampler else None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, t, y) if ids is None else model(x, t, y) + model(x, t, y, ids_keep=ids)
    assert out.dtype == torch.bfloat16
    out.float().square().mean().backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
