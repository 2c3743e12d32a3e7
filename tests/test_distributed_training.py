"""Data parallelism: 2 Gloo processes under torchrun give the weights of 1 process with the same global batch."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from training_utils import RECIPES, TINY, load_recipe, max_abs_diff, weights

FLAGS = TINY + ["--steps", "3", "--ckpt-every", "3", "--num-samples", "2"]
FINAL = "checkpoints/0000003"


@pytest.fixture(scope="module")
def one_process(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("one")
    load_recipe("mdtv2_imagenet256").main(FLAGS + ["--out", str(out)])
    return out / FINAL


def torchrun(out: Path, *extra: str) -> None:
    torchrun_bin = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [torchrun_bin, "--standalone", "--nproc-per-node", "2", str(RECIPES / "mdtv2_imagenet256.py"), *FLAGS, "--out", str(out), *extra]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_match_one(strategy: str, one_process: Path, tmp_path: Path) -> None:
    torchrun(tmp_path, *(["--fsdp"] if strategy == "fsdp" else []))
    for name in ("model.safetensors", "ema.safetensors"):
        diff = max_abs_diff(weights(one_process, name), weights(tmp_path / FINAL, name))
        assert diff < 1e-5, f"{strategy} {name}: max |2 processes - 1 process| = {diff}"
    assert (tmp_path / "samples" / "0000003.png").is_file()


def test_gradient_accumulation_matches_one_batch(one_process: Path, tmp_path: Path) -> None:
    load_recipe("mdtv2_imagenet256").main(FLAGS + ["--out", str(tmp_path), "--micro-batch-size", "2"])
    for name in ("model.safetensors", "ema.safetensors"):
        assert max_abs_diff(weights(one_process, name), weights(tmp_path / FINAL, name)) < 1e-5


def test_activation_checkpointing_changes_nothing(one_process: Path, tmp_path: Path) -> None:
    load_recipe("mdtv2_imagenet256").main(FLAGS + ["--out", str(tmp_path), "--activation-checkpointing"])
    for name in ("model.safetensors", "ema.safetensors"):
        assert max_abs_diff(weights(one_process, name), weights(tmp_path / FINAL, name)) < 1e-6
