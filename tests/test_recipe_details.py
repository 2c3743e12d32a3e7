"""Small things a user would otherwise guess (issue 25, item 10): worker default, no accelerate notice, named
corrupt images, a clear ``--vae None`` refusal, truthful help texts and enlarged grids of small images."""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from training_utils import load_recipe, save_tiny_vae

from mdtblocks.data import ImageFolderDataset, grid_scale, load_autoencoder, save_image_grid
from mdtblocks.training.distributed import Distributed
from mdtblocks.training.loop import report_skipped
from mdtblocks.training.recipe import RecipeConfig, build_parser, exit_on_bad_input
from mdtblocks.training.recipe.cli import default_num_workers


def test_num_workers_default_to_the_cores_available(monkeypatch: pytest.MonkeyPatch) -> None:
    assert RecipeConfig().num_workers == min(8, len(os.sched_getaffinity(0)))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    assert default_num_workers() == 2
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # four processes share the node's cores
    assert default_num_workers() == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(96)))
    assert default_num_workers() == 8


@pytest.mark.skipif(importlib.util.find_spec("accelerate") is not None, reason="the notice is about accelerate missing")
def test_loading_a_vae_prints_no_accelerate_notice(tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog) -> None:
    save_tiny_vae(tmp_path / "vae")
    capfd.readouterr()
    load_autoencoder(str(tmp_path / "vae"))
    out, err = capfd.readouterr()
    assert "accelerate" not in out + err + caplog.text


def test_corrupt_images_are_named(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    for i in range(3):
        (tmp_path / "a").mkdir(exist_ok=True)
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a" / f"good{i}.png")
    for i in range(7):
        (tmp_path / "a" / f"broken{i}.png").write_bytes(b"not a png")
    ds = ImageFolderDataset(tmp_path, image_size=8, flip=False)
    for i in range(len(ds)):
        ds[i]
    with caplog.at_level(logging.WARNING, logger="mdtblocks.training"):
        assert report_skipped(ds, None, Distributed(0, 1, 0, torch.device("cpu"))) == 7
    assert "skipped 7 unreadable or corrupt image(s)" in caplog.text
    assert "'a/broken0.png', 'a/broken1.png', 'a/broken2.png', 'a/broken3.png', 'a/broken4.png' and 2 more" in caplog.text


def test_extract_with_vae_none_says_what_to_do(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main = load_recipe("extract_latents").main
    assert exit_on_bad_input(lambda: main(["--out", str(tmp_path / "c"), "--vae", "None"])) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --vae 'None': a latent cache needs a VAE") and "--vae none" in err
    assert err.count("\n") == 1 and not (tmp_path / "c").exists()
    with pytest.raises(ValueError, match="'None' names no VAE; pass None"):
        load_autoencoder("None")


def test_help_texts_say_what_happens() -> None:
    sample = load_recipe("sample")
    # argparse wraps lines at spaces and hyphens: compare without whitespace.
    text = "".join(build_parser(sample.SampleConfig).format_help().split())
    assert "none:RUN/samples/<ckpt>-<weights>-<sampler><steps>-cfg<scale>[-pow<p>]-seed<seed>" in text
    data_help = "".join(build_parser(RecipeConfig).format_help().split())
    assert "ADMflatfilesnamedClassID_ImgID.ext" in data_help


def test_default_sample_folder_matches_the_help(tmp_path: Path) -> None:
    sample = load_recipe("sample")
    ckpt = tmp_path / "run" / "checkpoints" / "0000100"
    ckpt.mkdir(parents=True)
    (ckpt / "config.json").write_text("{}")
    (tmp_path / "run" / "config.json").write_text("{}")
    cfg = sample.SampleConfig(ckpt=str(ckpt), scale_pow=4.0, cfg_scale=1.5)
    assert sample.default_out(cfg) == (tmp_path / "run" / "samples" / "0000100-ema-ddpm250-cfg1.5-pow4-seed0").resolve()


def test_small_images_are_enlarged_in_grids(tmp_path: Path) -> None:
    assert grid_scale(28) == 4 and grid_scale(16) == 6 and grid_scale(96) == 1 and grid_scale(256) == 1
    digits = np.asarray(Image.open(save_image_grid(
        torch.zeros(4, 1, 28, 28),
        tmp_path / "g.png", nrow=2, padding=2, scale=grid_scale(28),
    )))
    assert digits.shape == (4 * (2 * 30 + 2), 4 * (2 * 30 + 2))  # 28 px digits shown as 112 px tiles
