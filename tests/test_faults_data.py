"""Fault suite, data: an empty class folder, an empty dataset, one smaller than the global batch and a damaged
latent cache are refused before training, with a message naming the path and the mismatch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from training_utils import TINY, load_recipe

from mdtblocks.data import DigitsDataset, LatentDataset, encode_dataset, load_autoencoder


def images(root: Path, classes: dict[str, int]) -> Path:
    rng = np.random.default_rng(0)
    for name, count in classes.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def refused(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    short = ["--steps", "2", "--ckpt-every", "2", "--num-samples", "0"]  # a short run if the refusal were missing
    with pytest.raises(SystemExit) as stop:
        load_recipe("mdtv2_imagenet256").main(argv + short)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_empty_class_folder_is_refused(tmp_path: Path, capsys) -> None:
    root = images(tmp_path / "data", {"cat": 4, "dog": 0})
    err = refused(capsys, TINY + ["--data", str(root), "--vae", "none", "--out", str(tmp_path / "run")])
    assert f"class folder {str(root / 'dog')!r} holds no images" in err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_empty_dataset_is_refused(tmp_path: Path, capsys) -> None:
    root = tmp_path / "data"
    root.mkdir()
    err = refused(capsys, TINY + ["--data", str(root), "--vae", "none", "--out", str(tmp_path / "run")])
    assert "no images" in err and str(root) in err


def test_dataset_smaller_than_the_global_batch_is_refused(tmp_path: Path, capsys) -> None:
    root = images(tmp_path / "data", {"cat": 1, "dog": 2})  # 6 samples with flips, batch 8
    err = refused(capsys, TINY + ["--data", str(root), "--vae", "none", "--out", str(tmp_path / "run")])
    assert f"the dataset {root} holds 6 samples (flips included), fewer than --global-batch-size 8" in err


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    digits = DigitsDataset(image_size=8, channels=1)
    digits.images, digits.labels, digits.num_images = digits.images[:12], digits.labels[:12], 12
    out = tmp_path / "cache"
    encode_dataset(digits, load_autoencoder(None, channels=1), out, batch_size=4, shard_size=8, seed=0)
    return out


def test_latent_shard_of_the_wrong_size_is_refused(cache: Path) -> None:
    LatentDataset(cache)  # intact
    shard = sorted(p for p in cache.glob("*.npy") if not p.name.endswith("-labels.npy"))[0]
    good = np.load(shard)
    np.save(shard, good[:-1])
    with pytest.raises(ValueError, match=rf"latent shard '{shard}' holds an array of shape \({len(good) - 1}, "):
        LatentDataset(cache)


def test_missing_latent_shard_is_refused(cache: Path) -> None:
    shard = sorted(p for p in cache.glob("*.npy") if not p.name.endswith("-labels.npy"))[-1]
    shard.unlink()
    with pytest.raises(ValueError, match=f"latent shard '{shard}' is missing or unreadable"):
        LatentDataset(cache)
