"""recipes/evaluate.py end to end on a tiny random feature network, the statistics cache, and its error exits."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from training_utils import RECIPES, load_recipe

from mdtblocks.evaluation import (
    InceptionFeatures,
    InceptionStatistics,
    evaluate_samples,
)
from mdtblocks.io import atomic_write


def tiny_features() -> InceptionFeatures:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 5, 4, stride=4), nn.Tanh(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return InceptionFeatures(net, image_size=16)


def save_npz(path: Path, **arrays: np.ndarray) -> Path:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    return atomic_write(path, write)


@pytest.fixture
def sets(tmp_path: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    samples = rng.integers(0, 256, size=(24, 12, 12, 3), dtype=np.uint8)
    reference = rng.integers(40, 256, size=(30, 12, 12, 3), dtype=np.uint8)
    return (save_npz(tmp_path / "samples.npz", arr_0=samples, arr_1=np.zeros(24, np.int64)),
            save_npz(tmp_path / "ref.npz", arr_0=reference))


def test_evaluate_writes_metrics_and_caches_reference(sets, tmp_path: Path, capsys) -> None:
    samples, reference = sets
    recipe = load_recipe("evaluate")
    cache, out = tmp_path / "ref_stats.npz", tmp_path / "results.json"
    argv = [str(samples), str(reference), "--batch-size", "7", "--device", "cpu", "--no-progress"]
    assert recipe.main([*argv, "--cache-stats", str(cache), "--out", str(out)], features=tiny_features()) == 0
    report = json.loads(out.read_text())
    metrics = report["metrics"]
    assert set(metrics) == {"fid", "precision", "recall"} and metrics["fid"] > 1e-3
    with np.load(samples) as s, np.load(reference) as r:
        assert metrics == pytest.approx(evaluate_samples(s["arr_0"], r["arr_0"], features=tiny_features()), rel=1e-9)
    assert 0.0 <= metrics["precision"] <= 1.0 and 0.0 <= metrics["recall"] <= 1.0
    assert set(report["unavailable"]) == {"sfid", "inception_score"}
    assert report["num_samples"] == 24 and report["num_reference"] == 30
    assert "fid:" in capsys.readouterr().out
    cached = InceptionStatistics.load(cache)
    assert cached.num_images == 30
    # The cached statistics as REFERENCE give the same numbers (no reference images read); default --out.
    assert recipe.main([str(samples), str(cache), "--device", "cpu", "--no-progress"], features=tiny_features()) == 0
    again = json.loads(samples.with_suffix(".metrics.json").read_text())
    assert again["metrics"] == pytest.approx(metrics, rel=1e-9)


def test_bad_input_exits_with_a_message(sets, tmp_path: Path, capsys) -> None:
    samples, reference = sets
    recipe = load_recipe("evaluate")
    bad = save_npz(tmp_path / "bad.npz", arr_0=np.zeros((4, 3, 8, 8), np.float32))
    cases = [
        ([str(tmp_path / "nope.npz"), str(reference)], "SAMPLES '.*nope.npz' does not exist"),
        ([str(bad), str(reference)], r"'arr_0' of .*bad.npz' is float32 with shape \(4, 3, 8, 8\); expected uint8"),
        ([str(samples), str(reference), "--batch-size", "0"], "--batch-size must be at least 1, got 0"),
        ([str(samples), str(reference), "--cache-stats", "x.json"], "--cache-stats 'x.json' must name an .npz"),
    ]
    for argv, message in cases:
        assert recipe.main([*argv, "--no-progress"], features=tiny_features()) == 2, argv
        err = capsys.readouterr().err
        assert err.strip().splitlines()[-1].startswith("error: ") and "Traceback" not in err
        assert __import__("re").search(message, err), (message, err)


def test_cli_error_in_a_subprocess(tmp_path: Path) -> None:
    text = tmp_path / "ref.txt"
    text.write_text("not images")
    proc = subprocess.run(
        [sys.executable, str(RECIPES / "evaluate.py"), str(text), str(text), "--device", "cpu"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 2
    assert "error: " in proc.stderr and "neither a folder nor an .npz" in proc.stderr and "Traceback" not in proc.stderr


def test_the_report_names_the_objective_that_made_the_samples(sets, tmp_path: Path) -> None:
    """recipes/sample.py writes sample_config.json beside samples.npz; the report carries its objective record."""
    samples, reference = sets
    made = {"ckpt": "run/checkpoints/0000100", "sampler": "ddpm", "steps": 250, "cfg_scale": 1.5,
            "objective": {"kind": "gaussian", "noise_schedule": "linear", "diffusion_steps": 1000}}
    (samples.parent / "sample_config.json").write_text(json.dumps(made))
    out = tmp_path / "r.json"
    argv = [str(samples), str(reference), "--device", "cpu", "--no-progress", "--out", str(out)]
    assert load_recipe("evaluate").main(argv, features=tiny_features()) == 0
    assert json.loads(out.read_text())["sampled_with"] == made
