"""``--compile``: a few training steps of a tiny real model through ``torch.compile`` equal the eager steps.

The compiled run goes through the loop's whole compile path (the model traced by dynamo, with
its value checks off, trained and checkpointed through the compiled wrapper). It uses
dynamo's ``aot_eager`` backend, which traces forward and backward like inductor but runs the
captured graphs with eager kernels: inductor's C++ code generation took 200 s for these two
steps on one CPU core, too long for CI (its weights matched eager to 8e-7 when measured).

Dynamo cannot trace through the jaxtyping import hook's beartype checks (users run without the
hook), so the comparison runs in a pytest process without it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from training_utils import TINY, load_recipe, max_abs_diff, weights

ROOT = Path(__file__).resolve().parent.parent
FLAGS = TINY + ["--steps", "2", "--ckpt-every", "2", "--num-samples", "0", "--ema-decay", "0.5"]


def test_compile_without_the_import_hook() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "pytest", "tests/test_compile.py::test_compiled_steps_equal_eager", "-q",
           "-o", "addopts=", "-p", "no:cacheprovider"]
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "1 passed" in run.stdout, run.stdout[-2000:]


def test_compiled_steps_equal_eager(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request) -> None:
    if request.config.getoption("jaxtyping_packages", default=None):
        pytest.skip("run without the jaxtyping hook by test_compile_without_the_import_hook")
    recipe = load_recipe("mdtv2_imagenet256")
    recipe.main(FLAGS + ["--out", str(tmp_path / "eager")])
    calls = []
    real_compile = torch.compile

    def compile_aot_eager(model, **kwargs):
        calls.append(model)
        return real_compile(model, **{**kwargs, "backend": "aot_eager"})

    monkeypatch.setattr(torch, "compile", compile_aot_eager)
    torch._dynamo.reset()
    try:
        recipe.main(FLAGS + ["--out", str(tmp_path / "compiled"), "--compile"])
    finally:
        torch._dynamo.reset()
    assert calls, "--compile did not call torch.compile"
    eager, compiled = tmp_path / "eager" / "checkpoints" / "0000002", tmp_path / "compiled" / "checkpoints" / "0000002"
    for name in ("model.safetensors", "ema.safetensors"):
        a, b = weights(eager, name), weights(compiled, name)
        assert a.keys() == b.keys()  # no "_orig_mod." prefixes from the compiled wrapper
        diff = max_abs_diff(a, b)
        assert diff < 1e-5, f"{name}: max |compiled - eager| = {diff}"
    assert max_abs_diff(weights(eager), weights(tmp_path / "eager" / "checkpoints" / "0000002", "ema.safetensors")) > 1e-4
