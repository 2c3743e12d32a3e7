"""Resuming a run folder with flags that build another model is refused with one line, not a load traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from training_utils import RECIPES, ROOT, TINY, with_flag

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def train(out: Path, *flags: str) -> subprocess.CompletedProcess:
    argv = [sys.executable, str(RECIPES / "mdtv2_imagenet256.py"), *flags, "--out", str(out), "--ckpt-every", "1",
            "--num-samples", "0"]
    return subprocess.run(argv, env=ENV, capture_output=True, text=True, timeout=300)


def test_resuming_with_another_model_is_refused(tmp_path: Path) -> None:
    first = train(tmp_path, *TINY, "--steps", "1")
    assert first.returncode == 0, first.stderr[-3000:]
    other = with_flag(with_flag(TINY, "--depth", "4"), "--decode-layer", "2")  # another model on the same --out
    second = train(tmp_path, *other, "--steps", "2")
    assert second.returncode == 2
    assert "Traceback" not in second.stderr, second.stderr[-3000:]
    errors = [line for line in second.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "holds the weights of another model" in errors[0], second.stderr[-3000:]
    assert "missing: ['" in errors[0] and "not in this model: []" in errors[0]  # the keys this model adds are named


def test_resuming_with_other_flips_is_refused(tmp_path: Path) -> None:
    """A built-in run trained with --flip (twice the samples) and resumed without it stops with one line naming --flip."""
    first = train(tmp_path, *TINY, "--steps", "1", "--flip")
    assert first.returncode == 0, first.stderr[-3000:]
    second = train(tmp_path, *TINY, "--steps", "2")
    assert second.returncode == 2 and "Traceback" not in second.stderr, second.stderr[-3000:]
    errors = [line for line in second.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "trained on other data" in errors[0] and "--flip" in errors[0], second.stderr[-3000:]
