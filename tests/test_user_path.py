"""The README's ImageNet path walked end to end at a tiny size, as a new user takes it (issue 25's walk).

A class-folder image dataset with a stray top-level file, a tiny random diffusers
``AutoencoderKL`` saved to a folder, ``extract_latents.py``, a two-process ``torchrun``
training from ``--latents``, ``sample.py``, the exported pipeline, and a second run on the
same ``--out`` while the first one holds it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from training_utils import RECIPES, ROOT, TINY, save_tiny_vae, with_flag

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
TORCHRUN = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")


def run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*args], env=ENV, capture_output=True, text=True, timeout=timeout)


def class_folders(root: Path) -> Path:
    """Two classes of 16 px images (dark and bright), and a stray preview next to the class folders."""
    rng = np.random.default_rng(0)
    for label, (name, level) in enumerate((("cat", 40), ("dog", 210))):
        (root / name).mkdir(parents=True)
        for k in range(4):
            pixels = np.clip(level + rng.integers(-20, 20, (16, 16, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"img_{k}.png")
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(root / "grid_preview.png")
    return root


def holder_pid(out: Path) -> int | None:
    try:
        return json.loads((out / ".lock").read_text()).get("pid")
    except (OSError, ValueError):
        return None


@pytest.mark.skipif(not Path(TORCHRUN).exists(), reason="torchrun not installed")
def test_a_new_user_walks_the_imagenet_path(tmp_path: Path) -> None:
    data = class_folders(tmp_path / "train")
    vae = save_tiny_vae(tmp_path / "vae")
    cache, out = tmp_path / "latents", tmp_path / "run"

    # 1. Extraction: the stray file is skipped with a warning that names it; the labels follow the folders.
    proc = run(sys.executable, str(RECIPES / "extract_latents.py"), "--data", str(data), "--out", str(cache),
               "--vae", str(vae), "--image-size", "16", "--batch-size", "4", "--device", "cpu", "--num-workers", "0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "grid_preview.png" in proc.stdout + proc.stderr
    meta = json.loads((cache / "meta.json").read_text())
    assert meta["num_classes"] == 2 and meta["layout"] == "class folders"

    # 2. Two processes train two steps from the cache; the run records the class names and exports its pipeline.
    flags = with_flag(TINY, "--image-size", "16") + ["--latents", str(cache), "--out", str(out), "--ckpt-every", "2"]
    proc = run(TORCHRUN, "--standalone", "--nproc-per-node", "2", str(RECIPES / "mdtv2_imagenet256.py"), *flags,
               "--steps", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 classes, 8 images" in proc.stdout + proc.stderr
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "cat", "1": "dog"}

    # 3. The exported pipeline decodes with the run's VAE: three-channel images of the data's size.
    from mdtblocks import MDTPipeline

    pipe = MDTPipeline.from_pretrained(out / "pipeline")
    images = pipe(class_labels=[0, 1], num_inference_steps=2, output_type="np").images
    assert np.asarray(images).shape == (2, 16, 16, 3)

    # 4. sample.py draws images, not latents.
    samples = tmp_path / "samples"
    proc = run(sys.executable, str(RECIPES / "sample.py"), "--ckpt", str(out), "--out", str(samples),
               "--num-samples", "2", "--sampler", "ddim", "--steps", "2", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert np.load(samples / "samples.npz")["arr_0"].shape == (2, 16, 16, 3)

    # 5. A second run on the same --out while the first holds it is refused at once with one line.
    out2 = tmp_path / "run2"
    longer = [sys.executable, str(RECIPES / "mdtv2_imagenet256.py"), *with_flag(flags, "--out", str(out2)),
              "--steps", "100000"]
    first = subprocess.Popen(longer, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while holder_pid(out2) != first.pid:
            assert first.poll() is None and time.monotonic() < deadline, "the first run never took the lock"
            time.sleep(0.2)
        second = run(*longer, timeout=120)
    finally:
        first.kill()
        first.wait()
    assert second.returncode == 2
    errors = [line for line in second.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and "Traceback" not in second.stderr, second.stderr[-3000:]
    assert f"is in use by another run (pid {first.pid} on host {socket.gethostname()}" in errors[0]
