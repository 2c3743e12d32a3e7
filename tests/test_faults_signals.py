"""Fault suite, signals: SIGTERM (preemption) and SIGINT (Ctrl-C) checkpoint at the next step and exit 0 / 130;
the resume from that checkpoint is bit-identical to an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from training_utils import RECIPES, TINY, load_recipe, max_abs_diff, weights

from mdtblocks.training import latest_checkpoint

STEPS = 2000  # far more than the test waits for: the signal always arrives mid-run


def interrupted_run(out: Path, signum: int) -> tuple[int, str]:
    """Start a tiny training process, send ``signum`` once it has logged two steps; ``(exit code, stderr)``."""
    cmd = [sys.executable, str(RECIPES / "mdtv2_imagenet256.py"), *TINY, "--steps", str(STEPS), "--ckpt-every", "100000",
           "--num-samples", "0", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 120
    while proc.poll() is None and time.time() < deadline:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


def test_sigterm_checkpoints_exits_0_and_resumes_bit_identical(tmp_path: Path) -> None:
    code, err = interrupted_run(tmp_path / "stopped", signal.SIGTERM)
    assert code == 0, err
    ckpt = latest_checkpoint(tmp_path / "stopped")
    assert ckpt is not None, err
    stopped_at = int(ckpt.name)
    assert 2 <= stopped_at < STEPS
    assert f"checkpointed step {stopped_at}" in err
    final = stopped_at + 2
    flags = TINY + ["--steps", str(final), "--ckpt-every", "100000", "--num-samples", "0"]
    recipe = load_recipe("mdtv2_imagenet256")
    recipe.main(flags + ["--out", str(tmp_path / "stopped")])
    recipe.main(flags + ["--out", str(tmp_path / "clean")])
    name = f"checkpoints/{final:07d}"
    for weights_file in ("model.safetensors", "ema.safetensors"):
        a, b = weights(tmp_path / "stopped" / name, weights_file), weights(tmp_path / "clean" / name, weights_file)
        assert max_abs_diff(a, b) == 0.0, weights_file


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigint_checkpoints_and_exits_130(tmp_path: Path) -> None:
    code, err = interrupted_run(tmp_path, signal.SIGINT)
    assert code == 130, err
    ckpt = latest_checkpoint(tmp_path)
    assert ckpt is not None and 2 <= int(ckpt.name) < STEPS
    assert "Traceback" not in err
