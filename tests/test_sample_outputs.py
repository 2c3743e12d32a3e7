"""recipes/sample.py and its --out: a finished folder is kept (exit 0), another command is refused, --overwrite
draws anew; Ctrl-C prints one line per job and exits 130, also under torchrun."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from test_sample_recipe import fake_run  # noqa: F401 (the fixture)
from training_utils import RECIPES, ROOT, load_recipe

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def flags(run: Path, out: Path, *extra: str) -> list[str]:
    return ["--ckpt", str(run / "checkpoints" / "0000100"), "--num-samples", "6", "--batch-size", "4",
            "--sampler", "ddim", "--steps", "2", "--device", "cpu", "--no-progress", "--out", str(out), *extra]


def test_a_finished_out_is_kept_and_overwrite_draws_anew(fake_run: Path, tmp_path: Path, monkeypatch, capsys) -> None:  # noqa: F811
    recipe = load_recipe("sample")
    drawn: list[int] = []
    real = recipe.sample
    monkeypatch.setattr(recipe, "sample", lambda *a, **k: drawn.append(1) or real(*a, **k))
    out = tmp_path / "s"
    recipe.main(flags(fake_run, out))
    assert len(drawn) == 2
    first_log = capsys.readouterr().err
    assert "drew 2 of its 2 batches" in first_log and "earlier run" not in first_log
    before = {name: (out / name).read_bytes() for name in ("samples.npz", "grid.png", "sample_config.json")}

    assert recipe.main(flags(fake_run, out)) == out  # the same command again: kept, nothing drawn, exit 0
    assert len(drawn) == 2
    assert f"{out} already holds the 6 samples of this command" in capsys.readouterr().err
    assert {name: (out / name).read_bytes() for name in before} == before

    with pytest.raises(ValueError, match=r"holds the finished samples of another command: --seed 1 \(recorded: 0\); "
                                         r"choose another --out for a new draw, or give --overwrite"):
        recipe.main(flags(fake_run, out, "--seed", "1"))
    assert len(drawn) == 2 and (out / "samples.npz").read_bytes() == before["samples.npz"]

    recipe.main(flags(fake_run, out, "--seed", "1", "--overwrite"))
    assert len(drawn) == 4
    with np.load(out / "samples.npz") as new:
        assert new["arr_0"].shape == (6, 16, 16, 3)
    assert (out / "samples.npz").read_bytes() != before["samples.npz"]
    recipe.main(flags(fake_run, out, "--seed", "1"))  # the new draw is the finished one now
    assert len(drawn) == 4


def interrupt_when_a_batch_is_done(cmd: list[str], out: Path) -> tuple[int, str]:
    """Start ``cmd`` in its own process group, send SIGINT to the whole group (as a terminal's Ctrl-C) once a
    batch file exists; ``(exit code, stderr)``."""
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 180
    while not any((out / ".batches").glob("batch-*.npz")):
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


def sampling_flags(run: Path, out: Path) -> list[str]:
    return ["--ckpt", str(run / "checkpoints" / "0000100"), "--num-samples", "40", "--batch-size", "2",
            "--sampler", "ddim", "--steps", "25", "--device", "cpu", "--no-progress", "--out", str(out)]


LINE = re.compile(r"^interrupted at (\d+) of 40 images; the same command resumes$", re.MULTILINE)


def test_ctrl_c_prints_one_line_and_exits_130(fake_run: Path, tmp_path: Path) -> None:  # noqa: F811
    out = tmp_path / "s"
    code, err = interrupt_when_a_batch_is_done([sys.executable, str(RECIPES / "sample.py"), *sampling_flags(fake_run, out)], out)
    assert code == 130, err[-3000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    found = LINE.findall(err)
    assert len(found) == 1, err[-3000:]
    assert int(found[0]) == 2 * len(list((out / ".batches").glob("batch-*.npz"))) >= 2


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
                    reason="torchrun not installed")
def test_ctrl_c_under_torchrun_prints_one_line_per_job(fake_run: Path, tmp_path: Path) -> None:  # noqa: F811
    """Ctrl-C reaches torchrun and both ranks: the ranks exit 130 without tracebacks, rank 0 prints the line.

    torchrun itself then reports the signal (its own traceback of a ``SignalException``, exit status 1); that
    part is torch.distributed.run's and not the recipe's.
    """
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    out = tmp_path / "s"
    cmd = [torchrun, "--standalone", "--nproc-per-node", "2", str(RECIPES / "sample.py"), *sampling_flags(fake_run, out)]
    _, err = interrupt_when_a_batch_is_done(cmd, out)
    assert len(LINE.findall(err)) == 1, err[-3000:]
    assert "KeyboardInterrupt" not in err, err[-3000:]
    assert err.count("Traceback") == err.count("SignalException: Process"), err[-3000:]  # only torchrun's own
