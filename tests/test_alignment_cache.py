"""Alignment features stored beside the latents (both flips), read back, and refused for another encoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.utils.data
from test_alignment_encoders import TinyInception

from mdtblocks.alignment import InceptionEncoder, resample_to_grid
from mdtblocks.data import (
    DigitsDataset,
    LatentDataset,
    encode_dataset,
    load_autoencoder,
)
from mdtblocks.data.latents import shard_is_complete


@pytest.fixture(scope="module")
def digits() -> DigitsDataset:
    data = DigitsDataset(image_size=8, channels=1)
    data.images, data.labels, data.num_images = data.images[:10], data.labels[:10], 10
    return data


@pytest.fixture(scope="module")
def encoder() -> InceptionEncoder:
    return InceptionEncoder(TinyInception(), resolution=32)  # 10 channels on an 8x8 grid


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory, digits: DigitsDataset, encoder: InceptionEncoder) -> Path:
    out = tmp_path_factory.mktemp("aligned") / "cache"
    encode_dataset(digits, load_autoencoder(None, channels=1), out, batch_size=4, shard_size=3, seed=0, align_encoder=encoder)
    return out


def test_features_of_both_flips_are_stored(cache: Path, digits: DigitsDataset, encoder: InceptionEncoder) -> None:
    data = LatentDataset(cache, align_encoder=encoder.record())
    assert data.meta["align_encoder"] == encoder.record() and len(data) == 20
    for i in (0, 4, 9):  # across shards of 3
        image = digits[i][0]  # index < num_images: the image itself, not its mirror
        _, label, features = data[i]
        _, _, mirror_features = data[10 + i]
        expected = encoder.feature_maps(image[None])[0]
        expected_mirror = encoder.feature_maps(image[None].flip(-1))[0]
        assert features.shape == (10, 8, 8) and features.dtype == torch.float32
        torch.testing.assert_close(features, expected, rtol=1e-3, atol=1e-3)  # stored as float16
        torch.testing.assert_close(mirror_features, expected_mirror, rtol=1e-3, atol=1e-3)
        assert not torch.equal(features, mirror_features)
        assert label == data.labels[i]
    # what training does with them: the token grid of a /2 backbone on the 8x8 digits is 4x4
    assert resample_to_grid(features[None], (4, 4)).shape == (1, 16, 10)
    plain = LatentDataset(cache)  # readers that do not align see the usual pairs
    assert len(plain[0]) == 2 and torch.equal(plain[3][0], data[3][0])
    assert all(shard_is_complete(cache, s) for s in data.meta["shards"])


def test_a_cache_of_another_encoder_or_none_is_refused(cache: Path, tmp_path: Path, digits: DigitsDataset, encoder: InceptionEncoder) -> None:
    other = {**encoder.record(), "resolution": 64}
    with pytest.raises(ValueError, match="stores features of the encoder .* not of"):
        LatentDataset(cache, align_encoder=other)
    bare = tmp_path / "bare"
    encode_dataset(digits, load_autoencoder(None, channels=1), bare, batch_size=4, seed=0)
    with pytest.raises(ValueError, match="stores no alignment features"):
        LatentDataset(bare, align_encoder=encoder.record())


def test_a_damaged_feature_shard_is_not_complete(cache: Path, tmp_path: Path) -> None:
    entry = LatentDataset(cache).meta["shards"][0]
    copy = tmp_path / "copy"
    copy.mkdir()
    for key in ("file", "labels", "align"):
        (copy / entry[key]).write_bytes((cache / entry[key]).read_bytes())
    assert shard_is_complete(copy, entry)
    np.save(copy / entry["align"], np.load(copy / entry["align"])[:-1])
    assert not shard_is_complete(copy, entry)


class _Crashes(torch.utils.data.Dataset):
    """The digits, failing at image ``at``: an extraction that dies after its first shards."""

    def __init__(self, data: DigitsDataset, at: int) -> None:
        self.data, self.at = data, at
        self.num_images, self.num_classes, self.classes, self.image_size = data.num_images, data.num_classes, data.classes, 8

    def __getitem__(self, index: int):
        if index >= self.at:
            raise RuntimeError("killed")
        return self.data[index]


def test_a_resumed_extraction_stores_the_same_features(cache: Path, tmp_path: Path, digits: DigitsDataset, encoder: InceptionEncoder) -> None:
    out = tmp_path / "resumed"
    pixels = load_autoencoder(None, channels=1)
    with pytest.raises(RuntimeError, match="killed"):  # batches of 4, shards of 3: dies inside the third batch
        encode_dataset(_Crashes(digits, 9), pixels, out, batch_size=4, shard_size=3, seed=0, align_encoder=encoder)
    assert not (out / "meta.json").exists() and list(out.glob("*-align.npy"))
    with pytest.raises(ValueError, match="other flags: --align-encoder"):  # another encoder on the part-done folder
        encode_dataset(digits, pixels, out, batch_size=4, shard_size=3, seed=0, align_encoder=InceptionEncoder(TinyInception(), resolution=16))
    encode_dataset(digits, pixels, out, batch_size=4, shard_size=3, seed=0, align_encoder=encoder)
    whole, resumed = LatentDataset(cache, align_encoder=encoder.record()), LatentDataset(out, align_encoder=encoder.record())
    for i in range(len(whole)):
        for a, b in zip(whole[i], resumed[i]):
            assert torch.equal(torch.as_tensor(a), torch.as_tensor(b)), i
