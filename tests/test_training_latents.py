"""Training in latent space with a tiny random-initialised diffusers AutoencoderKL: from a latent cache, and
encoding an image folder on the fly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from training_utils import TINY, load_recipe, save_tiny_vae

import mdtblocks
from mdtblocks.data import DigitsDataset, encode_dataset, load_autoencoder


@pytest.fixture(scope="module")
def tiny_vae(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_vae(tmp_path_factory.mktemp("vae") / "tiny-vae")


def flags_for(out: Path, *extra: str) -> list[str]:
    flags = [f for f in TINY]
    flags[flags.index("--image-size") + 1] = "16"
    return flags + ["--out", str(out), "--steps", "2", "--ckpt-every", "2", *extra]


def check_run(out: Path, vae: Path) -> None:
    config = json.loads((out / "config.json").read_text())
    assert config["vae"] == str(vae)
    model = mdtblocks.load_pretrained(out / "checkpoints" / "0000002", weights_name="ema.safetensors")
    assert (model.config.in_channels, model.config.input_size) == (4, 8)  # 16 px / downsample 2, 4 latent channels
    grid = Image.open(out / "samples" / "0000002.png")
    assert grid.mode == "RGB"  # decoded by the VAE to RGB images


def test_train_from_latent_cache(tiny_vae: Path, tmp_path: Path) -> None:
    ae = load_autoencoder(str(tiny_vae))
    cache = tmp_path / "latents"
    digits = DigitsDataset(image_size=16, channels=3)
    digits.images, digits.labels, digits.num_images = digits.images[:40], digits.labels[:40], 40
    encode_dataset(digits, ae, cache, batch_size=20, seed=0)
    out = tmp_path / "run"
    # No --vae: the cache's meta.json names the VAE that decodes the sample grids.
    # --image-size is ignored for a cache: the run records the size the cache was made at.
    load_recipe("mdtv2_imagenet256").main(flags_for(out, "--latents", str(cache), "--image-size", "256"))
    check_run(out, tiny_vae)
    assert json.loads((out / "config.json").read_text())["image_size"] == 16


def test_train_from_images_through_the_vae(tiny_vae: Path, tmp_path: Path) -> None:
    root = tmp_path / "images"
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 256, (20, 18, 3), dtype=np.uint8)).save(root / cls / f"{i}.png")
    out = tmp_path / "run"
    load_recipe("mdtv2_imagenet256").main(flags_for(out, "--data", str(root), "--vae", str(tiny_vae)))
    check_run(out, tiny_vae)
    assert json.loads((out / "config.json").read_text())["num_classes"] == 2


def test_corrupt_images_are_skipped_and_counted_in_the_metrics(tiny_vae: Path, tmp_path: Path) -> None:
    root = tmp_path / "images"
    rng = np.random.default_rng(1)
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(root / cls / f"{i}.png")
    (root / "a" / "broken.png").write_bytes(b"not an image at all")
    out = tmp_path / "run"
    load_recipe("mdtv2_imagenet256").main(flags_for(out, "--data", str(root), "--vae", str(tiny_vae)))
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert records and records[-1]["skipped_images"] == 1
    assert all(np.isfinite(r["loss"]) for r in records)
