"""Image folders (both layouts, corrupt files), the digits dataset, the ADM crop and image grids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from mdtblocks.data import (
    DigitsDataset,
    ImageFolderDataset,
    center_crop,
    list_image_folder,
    pil_to_tensor,
    save_image_grid,
    to_uint8,
)


def write_image(path: Path, seed: int, size: tuple[int, int] = (40, 30)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return arr


@pytest.fixture
def class_folders(tmp_path: Path) -> Path:
    root = tmp_path / "folders"
    for c, cls in enumerate(["zebra", "ant", "cat"]):
        for i in range(2):
            write_image(root / cls / f"img{i}.png", seed=10 * c + i)
    (root / "ant" / "broken.jpg").write_bytes(b"\xff\xd8\xff this is not a jpeg")
    (root / "cat" / "notes.txt").write_text("not an image")
    return root


@pytest.fixture
def adm_flat(tmp_path: Path) -> Path:
    root = tmp_path / "flat"
    write_image(root / "n02_0001.png", 1)
    write_image(root / "n01_0002.png", 2)
    write_image(root / "n01_0003.jpg", 3)
    (root / "n02_0004.png").write_bytes(b"")  # empty file
    return root


def test_class_folders_labels_sorted_and_corrupt_skipped(class_folders: Path) -> None:
    ds = ImageFolderDataset(class_folders, image_size=8, flip=True)
    assert ds.classes == ["ant", "cat", "zebra"] and ds.num_classes == 3
    assert ds.num_images == 7 and len(ds) == 14  # 6 good + 1 broken, doubled by flips
    items = [ds[i] for i in range(len(ds))]
    assert ds.num_skipped == 1 and ds.skipped_files[0].name == "broken.jpg"
    for x, y in items:
        assert x.shape == (3, 8, 8) and x.dtype == torch.float32
        assert -1.0 <= x.min() and x.max() <= 1.0 and y in (0, 1, 2)
    # The broken file (ant/broken.jpg is first in sorted order) is replaced by the next good image.
    broken = ds.files.index(ds.skipped_files[0])
    assert torch.equal(items[broken][0], items[broken + 1][0])
    # Index num_images + i is the mirror of index i.
    for i in range(ds.num_images):
        assert torch.equal(items[ds.num_images + i][0], items[i][0].flip(-1))
        assert items[ds.num_images + i][1] == items[i][1]
    # Deterministic: a second read gives the same tensors.
    assert all(torch.equal(ds[i][0], items[i][0]) for i in range(len(ds)))


def test_adm_flat_layout(adm_flat: Path) -> None:
    files, labels, classes = list_image_folder(adm_flat)
    assert classes == ["n01", "n02"]
    assert [f.name for f in files] == ["n01_0002.png", "n01_0003.jpg", "n02_0001.png", "n02_0004.png"]
    assert labels == [0, 0, 1, 1]
    ds = ImageFolderDataset(adm_flat, image_size=16, flip=False)
    assert len(ds) == 4
    x, y = ds[3]  # the empty file: wraps around to the first good image
    assert ds.num_skipped == 1 and y == 0 and torch.equal(x, ds[0][0])


def test_corrupt_file_counted_across_dataloader_workers(class_folders: Path) -> None:
    ds = ImageFolderDataset(class_folders, image_size=8, flip=False)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2)
    assert sum(len(x) for x, _ in loader) == 7
    assert ds.num_skipped == 1  # seen in a worker, counted in the parent


def test_image_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageFolderDataset(tmp_path / "missing", 8)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        ImageFolderDataset(tmp_path / "empty", 8)
    write_image(tmp_path / "flat" / "noprefix.png", 0)
    with pytest.raises(ValueError, match="noprefix.png"):
        ImageFolderDataset(tmp_path / "flat", 8)
    only_bad = tmp_path / "bad"
    (only_bad / "a").mkdir(parents=True)
    (only_bad / "a" / "x.png").write_bytes(b"junk")
    with pytest.raises(RuntimeError, match="could be read"):
        ImageFolderDataset(only_bad, 8)[0]


def test_center_crop_matches_adm_recipe() -> None:
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, size=(300, 500, 3), dtype=np.uint8))
    out = center_crop(img, 64)
    # By hand: 500x300 -> BOX halve to 250x150 and 125x75 (stop: 75 < 128), BICUBIC to 107x64, crop 21 from the left.
    half = img.resize((250, 150), resample=Image.BOX).resize((125, 75), resample=Image.BOX)
    resized = half.resize((round(125 * 64 / 75), 64), resample=Image.BICUBIC)
    expected = np.asarray(resized)[:, 21 : 21 + 64]
    assert out.size == (64, 64) and np.array_equal(np.asarray(out), expected)
    assert center_crop(Image.new("RGB", (10, 7)), 32).size == (32, 32)  # small images are upsampled


def test_digits_dataset() -> None:
    ds = DigitsDataset(image_size=16, channels=1, flip=True)
    assert ds.num_classes == 10 and ds.num_images == 1797 and len(ds) == 2 * 1797
    x, y = ds[5]
    assert x.shape == (1, 16, 16) and x.dtype == torch.float32 and y == 5
    assert x.min() >= -1 and x.max() <= 1 and x.max() > 0
    assert torch.equal(ds[1797 + 5][0], x.flip(-1)) and ds[1797 + 5][1] == y
    rgb = DigitsDataset(image_size=8, channels=3, flip=False)
    assert len(rgb) == 1797 and rgb[0][0].shape == (3, 8, 8)
    with pytest.raises(IndexError):
        rgb[1797]
    with pytest.raises(ValueError, match="channels"):
        DigitsDataset(channels=2)


def test_save_image_grid_and_uint8(tmp_path: Path) -> None:
    images = torch.linspace(-1, 1, 5 * 3 * 4 * 6).reshape(5, 3, 4, 6)
    path = save_image_grid(images, tmp_path / "sub" / "grid.png", nrow=3)
    grid = np.asarray(Image.open(path))
    assert grid.shape == (2 * (4 + 2) + 2, 3 * (6 + 2) + 2, 3)
    u8 = to_uint8(images)
    assert u8.shape == (5, 4, 6, 3) and u8.dtype == torch.uint8
    assert np.array_equal(grid[2:6, 2:8], u8[0].numpy())
    assert to_uint8(torch.tensor([-2.0, -1.0, 0.0, 1.0, 2.0]).reshape(1, 1, 1, 5)).flatten().tolist() == [0, 0, 127, 255, 255]
    gray = Image.open(save_image_grid(images[:, :1], tmp_path / "gray.png"))
    assert gray.mode == "L" and not list(tmp_path.glob(".*.tmp"))


@settings(max_examples=40, deadline=None)
@given(w=st.integers(1, 300), h=st.integers(1, 300), size=st.integers(1, 64))
def test_center_crop_always_gives_the_requested_square(w: int, h: int, size: int) -> None:
    out = center_crop(Image.new("RGB", (w, h), (10, 20, 30)), size)
    assert out.size == (size, size)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 1000))
def test_uint8_roundtrip_through_tensor_is_exact(seed: int) -> None:
    arr = np.random.default_rng(seed).integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    x = pil_to_tensor(Image.fromarray(arr))
    assert x.shape == (3, 5, 7) and x.min() >= -1 and x.max() <= 1
    # ADM's truncating conversion loses at most one level; adding half a level first makes it exact.
    assert np.array_equal(to_uint8((x + 0.5 / 127.5)[None])[0].numpy(), arr)
