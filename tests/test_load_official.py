"""Official checkpoint loading: inference of the architecture from the weights, wrappers, round trips."""

from __future__ import annotations

import argparse

import pytest
import torch

from conftest import CONFORMANCE, OFFICIAL_KWARGS
from mdtblocks import DiT, MaskedDiffusionTransformer, load_official


@pytest.mark.parametrize(("arch", "cls", "long_skip"), [("mdtv2", MaskedDiffusionTransformer, True), ("mdtv1", MaskedDiffusionTransformer, False), ("dit", DiT, None)])
def test_architecture_is_read_off_the_weights(arch, cls, long_skip):
    model = load_official(CONFORMANCE / f"{arch}_official.pt", **OFFICIAL_KWARGS[arch])
    assert type(model) is cls and not model.training
    cfg = model.config
    assert (cfg.input_size, cfg.patch_size, cfg.in_channels, cfg.hidden_size, cfg.num_heads, cfg.num_classes, cfg.learn_sigma) == (8, 2, 4, 64, 4, 10, True)
    if long_skip is not None:
        assert cfg.long_skip is long_skip and cfg.dense_skip is long_skip
        assert cfg.depth == 6 and cfg.decode_layer == 2


def test_dit_training_checkpoint_gives_its_ema_weights(tmp_path):
    state = torch.load(CONFORMANCE / "dit_official.pt", weights_only=True)
    noisy = {k: v + 1 for k, v in state.items()}
    path = tmp_path / "0001000.pt"
    torch.save({"model": noisy, "ema": state, "opt": {"state": {}}, "args": argparse.Namespace(model="DiT-XL/2")}, path)
    model = load_official(path, num_heads=4)
    expected = load_official(state, num_heads=4).state_dict()
    noisy_model = load_official(noisy, num_heads=4).state_dict()
    got = model.state_dict()
    assert got.keys() == expected.keys()
    for name in expected:
        assert torch.equal(got[name], expected[name]), f"{name} is not the EMA's"
        assert not torch.equal(got[name], noisy_model[name]), f"{name} is the training weights'"


def test_ddp_prefix_is_removed():
    state = torch.load(CONFORMANCE / "mdtv1_official.pt", weights_only=True)
    model = load_official({f"module.{k}": v for k, v in state.items()})
    assert torch.equal(model.side_interpolater.mask_token, state["mask_token"])


def test_mdt_v1_decode_layer_comes_from_kwargs():
    model = load_official(CONFORMANCE / "mdtv1_official.pt", decode_layer=3)
    assert len(model.encoder) == 3 and len(model.decoder) == 3


def test_dit_non_preset_width_needs_num_heads():
    with pytest.raises(ValueError, match="num_heads"):
        load_official(CONFORMANCE / "dit_official.pt")


def test_loaded_model_round_trips_through_save_pretrained(tmp_path, conformance_inputs):
    model = load_official(CONFORMANCE / "mdtv2_official.pt")
    model.save_pretrained(tmp_path)
    again = MaskedDiffusionTransformer.from_pretrained(tmp_path)
    x, t, y = (conformance_inputs[k] for k in ("x", "t", "y"))
    with torch.no_grad():
        assert torch.equal(again(x, t, y), model(x, t, y))


def test_odd_mlp_widths_are_rebuilt_exactly():
    from helpers import inputs, tiny_dit

    model = tiny_dit(hidden_size=28, mlp_ratio=2.18)  # fc1 width int(28 * 2.18) = 61
    assert model.blocks[0].mlp.fc1.out_features == 61
    loaded = load_official(model.state_dict(), num_heads=2)
    assert loaded.blocks[0].mlp.fc1.out_features == 61
    agreeing = load_official(model.state_dict(), num_heads=2, mlp_ratio=2.18)  # agrees with the weights: not refused
    for net in (loaded, agreeing):
        assert [b.mlp.fc1.out_features for b in net.blocks] == [61] * len(model.blocks)
        assert [b.mlp.fc2.in_features for b in net.blocks] == [61] * len(model.blocks)
    with pytest.raises(ValueError, match="mlp_ratio"):
        load_official(model.state_dict(), num_heads=2, mlp_ratio=4.0)
    x, t, y = inputs(model)
    with torch.no_grad():
        assert torch.equal(loaded(x, t, y), model(x, t, y))
        assert torch.equal(agreeing(x, t, y), model(x, t, y))
