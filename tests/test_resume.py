"""Resume: a run interrupted (or killed) and started again ends bit-identical to an uninterrupted one on CPU."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from training_utils import RECIPES, TINY, load_recipe, max_abs_diff, weights, with_flag
from training_utils import run_tiny as run

from mdtblocks.training import latest_checkpoint


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("straight")
    run(out, 6)
    return out / "checkpoints" / "0000006"


def test_resume_is_bit_identical(uninterrupted: Path, tmp_path: Path) -> None:
    run(tmp_path, 3)  # stops after the step-3 checkpoint, as a kill right after it would
    assert latest_checkpoint(tmp_path).name == "0000003"
    run(tmp_path, 6)  # the same command again (a longer --steps): resumes at step 3
    resumed = tmp_path / "checkpoints" / "0000006"
    for name in ("model.safetensors", "ema.safetensors"):
        assert max_abs_diff(weights(uninterrupted, name), weights(resumed, name)) == 0.0, name


def test_resume_with_gradient_accumulation_is_bit_identical(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    run(a, 4, "--micro-batch-size", "4")
    run(b, 3, "--micro-batch-size", "4")
    run(b, 4, "--micro-batch-size", "4")
    for name in ("model.safetensors", "ema.safetensors"):
        assert max_abs_diff(weights(a / "checkpoints/0000004", name), weights(b / "checkpoints/0000004", name)) == 0.0


def test_incomplete_checkpoint_is_ignored(uninterrupted: Path, tmp_path: Path) -> None:
    """A kill during a checkpoint write leaves a temporary folder: the resume skips it."""
    run(tmp_path, 3)
    partial = tmp_path / "checkpoints" / ".tmp-0000006-12345"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"half a file")
    assert latest_checkpoint(tmp_path).name == "0000003"
    run(tmp_path, 6)
    assert not partial.exists()
    assert max_abs_diff(weights(uninterrupted), weights(tmp_path / "checkpoints" / "0000006")) == 0.0


def test_killed_run_resumes_bit_identical(tmp_path: Path) -> None:
    """SIGKILL a real training process after its first checkpoint, rerun the command, compare with a clean run."""
    steps = 40
    flags = TINY + ["--steps", str(steps), "--ckpt-every", "4", "--num-samples", "0"]
    cmd = [sys.executable, str(RECIPES / "mdtv2_imagenet256.py"), *flags]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    killed = tmp_path / "killed"
    proc = subprocess.Popen([*cmd, "--out", str(killed)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while latest_checkpoint(killed) is None and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = latest_checkpoint(killed)
    assert first is not None and int(first.name) < steps, "the run finished before it could be killed"
    subprocess.run([*cmd, "--out", str(killed)], env=env, check=True, capture_output=True)
    clean = tmp_path / "clean"
    subprocess.run([*cmd, "--out", str(clean)], env=env, check=True, capture_output=True)
    final = f"checkpoints/{steps:07d}"
    for name in ("model.safetensors", "ema.safetensors"):
        assert max_abs_diff(weights(killed / final, name), weights(clean / final, name)) == 0.0, name


def test_resume_refuses_a_different_batch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Changing the global batch would silently change the data order: the resume says so, one line, exit 2."""
    run(tmp_path, 3)
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        load_recipe("mdtv2_imagenet256").main(
            with_flag(TINY, "--global-batch-size", "4") + ["--out", str(tmp_path), "--steps", "6", "--ckpt-every", "3"]
        )
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "was written with 8 samples per rank per step, this run has 4" in err
    assert "other data" not in err  # the batch, not the data, changed


def test_bf16_resume_is_bit_identical(tmp_path: Path) -> None:
    """Under bf16 autocast too: stopped after the first checkpoint and resumed, equal to a straight run."""
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    run(straight, 6, "--precision", "bf16")
    run(resumed, 3, "--precision", "bf16")
    assert latest_checkpoint(resumed).name == "0000003"
    run(resumed, 6, "--precision", "bf16")
    final = "checkpoints/0000006"
    for name in ("model.safetensors", "ema.safetensors"):
        assert max_abs_diff(weights(straight / final, name), weights(resumed / final, name)) == 0.0, name
