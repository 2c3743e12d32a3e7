"""recipes/evaluate.py says what it is doing at each stage, and warns when the sets are too small for a metric."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from training_utils import load_recipe

from mdtblocks.evaluation import InceptionFeatures
from mdtblocks.io import atomic_write


def features(channels: int) -> InceptionFeatures:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, channels, 4, stride=4), nn.Tanh(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return InceptionFeatures(net, image_size=16)


def image_set(path: Path, n: int, seed: int) -> Path:
    images = np.random.default_rng(seed).integers(0, 256, size=(n, 12, 12, 3), dtype=np.uint8)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, arr_0=images)

    return atomic_write(path, write)


def evaluate(tmp_path: Path, n_samples: int, n_reference: int, channels: int, caplog) -> tuple[dict, str]:
    samples, reference = image_set(tmp_path / "s.npz", n_samples, 0), image_set(tmp_path / "r.npz", n_reference, 1)
    with caplog.at_level(logging.INFO):
        code = load_recipe("evaluate").main(
            [str(samples), str(reference), "--device", "cpu", "--no-progress", "--out", str(tmp_path / "m.json")],
            features=features(channels),
        )
    assert code == 0
    return json.loads((tmp_path / "m.json").read_text()), caplog.text


def test_every_stage_reports_progress(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    report, log = evaluate(tmp_path, 24, 30, 5, caplog)
    for stage in ("features of 30 images", "features of 24 images", "statistics", "FID", "precision and recall"):
        assert f"{stage} done in" in log, stage
    assert "statistics: means and covariances of 30 images' 5-dimensional features" in log
    assert "precision and recall: k=3 nearest neighbours within 30 reference and 24 sample features" in log
    assert report["warnings"] == [] and "WARNING" not in log


def test_small_sets_are_warned_about(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # 32-dimensional features from 3 samples and 20 reference images; precision and recall need more than k=3.
    report, log = evaluate(tmp_path, 3, 20, 32, caplog)
    assert "fid" in report["metrics"] and "precision" not in report["metrics"]
    assert "SAMPLES has 3 images, fewer than the feature dimensions of FID (32 dimensions)" in log
    assert "REFERENCE has 20 images, fewer than the feature dimensions of FID (32 dimensions)" in log
    assert "SAMPLES has 3 images, not more than k=3: precision and recall are not computed" in log
    assert report["unavailable"]["precision"] == "each set needs more than k=3 images (its k-th nearest neighbour); SAMPLES has 3"
    assert len(report["warnings"]) == 3
