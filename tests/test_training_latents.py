"""Training in latent space with a tiny random-initialised diffusers AutoencoderKL: from a latent cache, and
encoding an image folder on the fly."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from training_utils import TINY, load_recipe, save_tiny_vae

import mdtblocks
from mdtblocks.data import DigitsDataset, encode_dataset, load_autoencoder
from mdtblocks.training.recipe import RecipeConfig, load_run_data


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
    load_recipe("mdtv2_imagenet256").main(flags_for(out, "--latents", str(cache)))
    check_run(out, tiny_vae)
    assert json.loads((out / "config.json").read_text())["image_size"] == 16


@pytest.fixture
def cache16(tiny_vae: Path, tmp_path: Path) -> Path:
    """A cache of 12 digits at 16 px encoded by the tiny VAE, as the extraction recipe records it."""
    digits = DigitsDataset(image_size=16, channels=3)
    digits.images, digits.labels, digits.num_images = digits.images[:12], digits.labels[:12], 12
    cache = tmp_path / "latents"
    encode_dataset(digits, load_autoencoder(str(tiny_vae)), cache, batch_size=12, extra_meta={"image_size": 16})
    return cache


def test_cache_refuses_another_vae_or_image_size_before_training(
    tiny_vae: Path, cache16: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other-vae"
    save_tiny_vae(other, seed=1)  # same architecture, other weights: its latents mean something else

    def refused(*extra: str) -> str:
        with pytest.raises(SystemExit) as stop:
            load_recipe("mdtv2_imagenet256").main(flags_for(tmp_path / "run", "--latents", str(cache16), *extra))
        assert stop.value.code == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and len([line for line in err.splitlines() if "error:" in line]) == 1
        return err

    err = refused("--vae", str(other))
    assert f"the latent cache {str(cache16)!r} was encoded with the VAE {str(tiny_vae)!r}" in err
    assert f"--vae asks for {str(other)!r} (their weights differ)" in err
    err = refused("--vae", "none")
    assert "--vae asks for none (pixel space)" in err
    err = refused("--image-size", "32")
    assert f"the latent cache {str(cache16)!r} was extracted at image size 16" in err and "asks for 32" in err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_cache_defaults_and_copies_of_its_vae_are_accepted(tiny_vae: Path, cache16: Path, tmp_path: Path) -> None:
    cfg = RecipeConfig(latents=str(cache16))  # --vae and --image-size at their defaults (SD-VAE, 256)
    data = load_run_data(cfg, given={"latents"})
    assert (data.vae, data.image_size, data.latent_shape) == (str(tiny_vae), 16, (4, 8))
    assert load_run_data(cfg).vae == str(tiny_vae)  # given=None: defaults are not held against the cache
    # A copy of the same VAE under another name (as for an offline machine): the same weights, accepted.
    copy = Path(shutil.copytree(tiny_vae, tmp_path / "copy"))
    data = load_run_data(dataclasses.replace(cfg, vae=str(copy), image_size=16), given={"vae", "image_size"})
    assert data.vae == str(copy)
    # The size recorded in meta.json must be the one its latents decode to.
    meta = json.loads((cache16 / "meta.json").read_text())
    (cache16 / "meta.json").write_text(json.dumps({**meta, "image_size": 64}))
    with pytest.raises(ValueError, match=r"records image_size 64 but its latents 4x8x8 decode to 16x16 pixels"):
        load_run_data(cfg, given=set())


def test_pixel_space_cache_needs_no_vae(tiny_vae: Path, tmp_path: Path) -> None:
    digits = DigitsDataset(image_size=8, channels=1)
    digits.images, digits.labels, digits.num_images = digits.images[:8], digits.labels[:8], 8
    encode_dataset(digits, load_autoencoder(None, channels=1), tmp_path / "pixels", batch_size=8)
    cfg = RecipeConfig(latents=str(tmp_path / "pixels"))
    data = load_run_data(cfg, given=set())
    assert data.vae is None and data.latent_shape == (1, 8) and data.image_size == 8
    with pytest.raises(ValueError, match=r"encoded with the VAE none \(pixel space\) \(its meta.json\) but --vae asks for"):
        load_run_data(dataclasses.replace(cfg, vae=str(tiny_vae)), given={"vae"})


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
