"""Latent extraction with a tiny random diffusers AutoencoderKL, and training data read back from the cache."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mdtblocks.training import derive_seed
from mdtblocks.data import ImageFolderDataset, KLAutoencoder, LatentDataset, PixelSpace, ResumableSampler, load_autoencoder

from training_utils import RECIPES, load_recipe, save_tiny_vae


@pytest.fixture(scope="module")
def tiny_vae_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_vae(tmp_path_factory.mktemp("vae") / "tiny-vae")


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (root / cls).mkdir()
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(root / cls / f"{i}.png")
    (root / "b" / "0bad.png").write_bytes(b"corrupt")
    return root


def test_load_autoencoder_interface(tiny_vae_dir: Path) -> None:
    ae = load_autoencoder(str(tiny_vae_dir))
    assert isinstance(ae, KLAutoencoder)
    assert (ae.latent_channels, ae.downsample, ae.scale) == (4, 2, 0.5)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    z1 = ae.encode(x, generator=torch.Generator().manual_seed(1))
    z2 = ae.encode(x, generator=torch.Generator().manual_seed(1))
    assert z1.shape == (2, 4, 8, 8) and torch.equal(z1, z2)
    mean = ae.vae.encode(x).latent_dist.mean
    assert not torch.equal(z1, mean * 0.5)  # a posterior sample, not the mean
    out = ae.decode(z1)
    assert out.shape == x.shape and out.abs().max() <= 1
    with pytest.raises(ValueError, match="divisible"):
        ae.encode(torch.zeros(1, 3, 15, 16))
    pixels = load_autoencoder(None, channels=1)
    assert isinstance(pixels, PixelSpace) and (pixels.latent_channels, pixels.downsample, pixels.scale) == (1, 1, 1.0)


def test_load_autoencoder_offline_error_is_actionable(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="--vae DIR.*--latents DIR"):
        load_autoencoder("no-such-org/no-such-vae", local_files_only=True)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_autoencoder(str(tmp_path / "empty"))


def test_extract_latents_recipe_and_latent_dataset(tiny_vae_dir: Path, image_dir: Path, tmp_path: Path) -> None:
    recipe = load_recipe("extract_latents")
    out = tmp_path / "latents"
    argv = ["--data", str(image_dir), "--out", str(out), "--vae", str(tiny_vae_dir), "--image-size", "16",
            "--batch-size", "4", "--seed", "3", "--device", "cpu", "--num-workers", "0", "--shard-size", "4"]
    meta = recipe.main(argv)
    assert meta["num_images"] == 6 and meta["num_skipped"] == 1 and meta["num_classes"] == 2
    assert meta["latent_shape"] == [4, 8, 8] and meta["scale_factor"] == 0.5 and meta["vae"] == str(tiny_vae_dir)
    assert json.loads((out / "meta.json").read_text())["image_size"] == 16
    assert [s["count"] for s in meta["shards"]] == [4, 2] and not list(out.glob("part-*"))

    ds = LatentDataset(out)
    assert len(ds) == 12 and ds.num_classes == 2 and ds.latent_shape == (4, 8, 8) and ds.scale_factor == 0.5
    # The cache holds exactly the encoder's output for the same images, noise stream and order.
    images = ImageFolderDataset(image_dir, 16, flip=False)
    good = [i for i in range(images.num_images) if images.load(i) is not None]
    ae = load_autoencoder(str(tiny_vae_dir))
    expected = []
    # Batch k holds files 4k..4k+3 (the unreadable one left out) and draws from (seed, "extract", rank, k).
    batches = [[i for i in good if k * 4 <= i < k * 4 + 4] for k in range((images.num_images + 3) // 4)]
    for k, batch in enumerate(batches):
        x = torch.stack([images.load(i) for i in batch])
        gen = torch.Generator().manual_seed(derive_seed(3, "extract", 0, k))
        z = ae.encode(torch.cat([x, x.flip(-1)]), generator=gen)
        expected.append((z[: len(x)], z[len(x) :]))
    plain = torch.cat([e[0] for e in expected])
    mirrored = torch.cat([e[1] for e in expected])
    for i in range(6):
        z, y = ds[i]
        assert z.dtype == torch.float32 and z.shape == (4, 8, 8)
        torch.testing.assert_close(z, plain[i])
        torch.testing.assert_close(ds[6 + i][0], mirrored[i])
        assert y == ds[6 + i][1] == images.labels[good[i]]
    assert [ds[i][1] for i in range(6)] == [0, 0, 0, 1, 1, 1]

    # Training-style loading: a DataLoader with workers over the resumable sampler.
    sampler = ResumableSampler(len(ds), seed=0)
    loader = torch.utils.data.DataLoader(ds, batch_size=5, sampler=sampler, num_workers=2)
    batches = list(loader)
    assert sum(len(x) for x, _ in batches) == 12 and batches[0][0].shape == (5, 4, 8, 8)
    assert len(LatentDataset(out, flip=False)) == 6

    with pytest.raises(FileExistsError, match="already holds"):
        recipe.main(argv)


def test_latent_dataset_rejects_unfinished_cache(tmp_path: Path) -> None:
    (tmp_path / "shard-00000.npy").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="meta.json"):
        LatentDataset(tmp_path)
    (tmp_path / "meta.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="format"):
        LatentDataset(tmp_path)


@pytest.mark.slow
def test_extract_latents_under_torchrun(tiny_vae_dir: Path, image_dir: Path, tmp_path: Path) -> None:
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    if not Path(torchrun).exists():
        pytest.skip("torchrun not installed")
    out = tmp_path / "latents2"
    cmd = [torchrun, "--standalone", "--nproc-per-node", "2", str(RECIPES / "extract_latents.py"), "--data",
           str(image_dir), "--out", str(out), "--vae", str(tiny_vae_dir), "--image-size", "16", "--batch-size", "2",
           "--device", "cpu", "--num-workers", "0", "--shard-size", "2"]
    proc = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ds = LatentDataset(out)
    assert len(ds) == 12 and ds.meta["num_skipped"] == 1 and ds.meta["world_size"] == 2
    # Contiguous parts per rank: the cache keeps the sorted file order of a one-process run.
    assert [ds[i][1] for i in range(6)] == [0, 0, 0, 1, 1, 1]
    assert {s["file"][:12] for s in ds.meta["shards"]} == {"shard-r00000", "shard-r00001"}
    assert not list(out.glob("part-*"))
