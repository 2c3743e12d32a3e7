"""Shared by the training tests: load a recipe module, tiny model flags, compare checkpoint weights."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "recipes"

# A model and run small enough for a test: 8x8 digits, width 32, 3 blocks, batch 8.
TINY = [
    "--model", "MDTv2-S/2", "--depth", "3", "--hidden-size", "32", "--num-heads", "2", "--decode-layer", "1",
    "--image-size", "8", "--global-batch-size", "8", "--num-workers", "0", "--device", "cpu",
    "--num-samples", "4", "--sample-steps", "2", "--log-every", "1",
]


def load_recipe(name: str):
    """Import ``recipes/<name>.py`` as a module."""
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", RECIPES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


def weights(ckpt: Path, name: str = "model.safetensors") -> dict[str, torch.Tensor]:
    return load_file(str(ckpt / name))


def max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def with_flag(flags: list[str], name: str, value: str) -> list[str]:
    """``flags`` with ``name``'s value replaced (or the flag appended)."""
    flags = list(flags)
    if name in flags:
        flags[flags.index(name) + 1] = value
    else:
        flags += [name, value]
    return flags


def save_tiny_vae(path: Path, seed: int = 0) -> Path:
    """Save a tiny random-initialised diffusers AutoencoderKL (downsampling 2, 4 latent channels, scale 0.5)."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16), layers_per_block=1, latent_channels=4, norm_num_groups=8,
        sample_size=16, scaling_factor=0.5,
    )
    vae.save_pretrained(path)
    return path


def run_tiny(out: Path, steps: int, *extra: str) -> None:
    """The MDTv2 recipe on the TINY config for ``steps`` steps, a checkpoint every 3, no sample grids."""
    load_recipe("mdtv2_imagenet256").main(
        TINY + ["--out", str(out), "--steps", str(steps), "--ckpt-every", "3", "--num-samples", "0", *extra]
    )


def start_killed_after(name: str, argv: Sequence[str], ready: Callable[[], bool], timeout: float = 120.0) -> None:
    """Run ``recipes/<name>.py argv`` in a subprocess and SIGKILL it as soon as ``ready()`` holds (polled)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, str(RECIPES / f"{name}.py"), *argv], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            if proc.poll() is not None:
                raise AssertionError(f"{name}.py ended (exit {proc.returncode}) before the kill: {proc.stderr.read()[-2000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{name}.py did not get ready within {timeout}s")
            time.sleep(0.005)
    finally:
        proc.kill()  # SIGKILL: nothing of the recipe runs after it
        proc.wait()
        proc.stderr.close()



def _descendants(root: int) -> list[int]:
    """Every process below ``root`` (Linux ``/proc``), whatever session or group it moved to."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def torchrun(script: Path, argv: Sequence[str], timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
    """``torchrun --standalone --nproc-per-node 2 script argv``, one thread per rank.

    On a timeout (a hang) every process of the job is killed, not only the launcher: torchrun
    starts each rank in a session of its own, so the ranks are found by walking ``/proc``.
    """
    import shutil
    import signal

    launcher = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    cmd = [launcher, "--standalone", "--nproc-per-node", "2", str(script), *argv]
    proc = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        for pid in [proc.pid, *_descendants(proc.pid)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        stdout, stderr = proc.communicate()
        raise AssertionError(f"torchrun did not finish within {timeout}s (a hang?): {stderr[-3000:]}") from None
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)
