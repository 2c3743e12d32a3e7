"""Image folder layouts: class folders win over stray top-level files, a mixed folder is refused; the run's
start states the data (layout, classes, images, sizes), warns of upsampling and records the class names."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from training_utils import load_recipe, save_tiny_vae

from mdtblocks.data import ImageFolderDataset, scan_image_folder, upsampling_warning


def write_image(path: Path, value: int, side: int = 7) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((side, side, 3), value, np.uint8)).save(path)


def class_folders(root: Path, classes: tuple[str, ...] = ("cat", "dog"), per_class: int = 4) -> Path:
    for c, name in enumerate(classes):
        for i in range(per_class):
            write_image(root / name / f"{i}.png", 20 * c + i)
    return root


def test_a_stray_top_level_file_is_skipped_and_named(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = class_folders(tmp_path / "data")
    write_image(root / "grid_preview.png", 255, side=20)  # would have made an ADM class "grid"
    with caplog.at_level(logging.WARNING, logger="mdtblocks.data"):
        ds = ImageFolderDataset(root, image_size=8, flip=False)
    assert ds.layout == "class folders"
    assert ds.classes == ["cat", "dog"] and ds.labels == [0, 0, 0, 0, 1, 1, 1, 1]
    assert [p.name for p in ds.skipped_top_files] == ["grid_preview.png"]
    assert "grid_preview.png" in caplog.text and "skipping 1 image file" in caplog.text


def test_a_mixed_folder_is_refused(tmp_path: Path) -> None:
    root = class_folders(tmp_path / "data", classes=("0", "1"))
    write_image(root / "1_00017.png", 3)  # an ADM flat file of class 1 next to the class folders
    with pytest.raises(ValueError, match=r"mixes two layouts: 2 class folders and 1 ADM flat files .*'1_00017.png'"):
        scan_image_folder(root)
    synsets = class_folders(tmp_path / "imagenet", classes=("n01440764", "n01443537"))
    write_image(synsets / "n01440764_10026.png", 3)
    with pytest.raises(ValueError, match="mixes two layouts"):
        scan_image_folder(synsets)


def test_nothing_usable_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty" / "a").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match="no images .* expected one subfolder per class, or ADM flat files"):
        scan_image_folder(tmp_path / "empty")


def test_adm_flat_files_are_still_read(tmp_path: Path) -> None:
    for name in ("n02_0001.png", "n01_0002.png", "n01_0003.png"):
        write_image(tmp_path / "flat" / name, 1)
    listing = scan_image_folder(tmp_path / "flat")
    assert listing.layout == "ADM flat files" and listing.classes == ["n01", "n02"] and listing.labels == [0, 0, 1]


def test_upsampling_warning() -> None:
    assert upsampling_warning(28, 56) is None and upsampling_warning(None, 256) is None
    text = upsampling_warning(28, 256, multiple=16)
    assert text is not None and "--image-size 256 upsamples them 9.1x" in text and "--image-size 32" in text


def test_run_states_its_data_and_records_class_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = class_folders(tmp_path / "data")
    write_image(root / "grid_preview.png", 255, side=20)
    out = tmp_path / "run"
    load_recipe("dit_imagenet256").main([
        "--data", str(root), "--vae", "none", "--model", "DiT-S/4", "--depth", "1", "--hidden-size", "32",
        "--num-heads", "2", "--image-size", "16", "--global-batch-size", "4", "--steps", "1", "--num-workers", "0",
        "--num-samples", "0", "--device", "cpu", "--out", str(out),
    ])
    err = capsys.readouterr().err
    assert "data: " + str(root) + " (class folders): 2 classes, 8 images (x2 with flips); images 16x16 (7 px on disk); " \
        "model input 3x16x16" in err
    assert "--image-size 16 upsamples them 2.3x" in err  # 7 px images at 16 px
    assert "grid_preview.png" in err
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "cat", "1": "dog"}
    index = json.loads((out / "pipeline" / "model_index.json").read_text())
    assert index["id2label"] == {"0": "cat", "1": "dog"}


def test_extraction_states_its_data_and_records_the_layout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = class_folders(tmp_path / "data")
    write_image(root / "grid_preview.png", 255, side=20)
    vae = save_tiny_vae(tmp_path / "vae")  # downsampling 2, 4 latent channels
    meta = load_recipe("extract_latents").main([
        "--data", str(root), "--vae", str(vae), "--image-size", "16", "--out", str(tmp_path / "lat"), "--device", "cpu",
        "--num-workers", "0",
    ])
    err = capsys.readouterr().err
    assert f"data: {root} (class folders): 2 classes, 8 images (x2 with flips); images 16x16 (7 px on disk); " \
        "latents 4x8x8" in err
    assert "warning: the images are 7 px on their shorter side: --image-size 16 upsamples them 2.3x" in err
    assert meta["layout"] == "class folders" and meta["classes"] == ["cat", "dog"] and meta["num_images"] == 8
