"""Fault suite, command-line values: every bad recipe flag is refused before any work, with one message that
quotes the value and the allowed range, exit code 2 and no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from training_utils import RECIPES, TINY, load_recipe

BAD_VALUES = [
    (["--steps", "0"], "--steps 0 is outside the allowed range: a positive integer"),
    (["--steps", "-5"], "--steps -5 is outside the allowed range: a positive integer"),
    (["--lr", "0"], "--lr 0.0 is outside the allowed range: a positive number"),
    (["--lr=-1e-4"], "--lr -0.0001 is outside the allowed range: a positive number"),
    (["--lr", "nan"], "--lr nan is outside the allowed range: a positive number"),
    (["--ema-decay", "1.5"], "--ema-decay 1.5 is outside the allowed range: [0, 1]"),
    (["--ema-decay", "-0.1"], "--ema-decay -0.1 is outside the allowed range: [0, 1]"),
    (["--seed", "-1"], "--seed -1 is outside the allowed range: a non-negative integer"),
    (["--mask-ratio", "1.0"], "--mask-ratio 1.0 is outside the allowed range: [0, 1)"),
    (["--mask-ratio", "-0.1"], "--mask-ratio -0.1 is outside the allowed range: [0, 1)"),
    (["--mask-ratio-range", "1.2"], "--mask-ratio-range 1.2 is outside the allowed range: [0, 1)"),
    (["--mask-ratio", "0.6", "--mask-ratio-range", "0.5"], "their sum must stay below 1"),
    (["--micro-batch-size", "3"], "--micro-batch-size 3 does not divide the per-process batch 8"),
    (["--micro-batch-size", "0"], "--micro-batch-size 0 is outside the allowed range: a positive integer or none"),
    (["--global-batch-size", "0"], "--global-batch-size 0 is outside the allowed range: a positive integer"),
    (["--sample-cfg-scale", "0.5"], "--sample-cfg-scale 0.5 is outside the allowed range: at least 1"),
    (["--keep-checkpoints", "0"], "--keep-checkpoints 0 is outside the allowed range: a positive integer or none"),
    (["--max-bad-steps", "0"], "--max-bad-steps 0 is outside the allowed range: a positive integer"),
    (["--compile", "--compile-blocks"], "--compile (the whole model) and --compile-blocks (each block) exclude each other"),
    (["--ckpt-every", "0"], "--ckpt-every 0 is outside the allowed range: a positive integer"),
    (["--log-every", "-1"], "--log-every -1 is outside the allowed range: a positive integer"),
    (["--grad-clip", "0"], "--grad-clip 0.0 is outside the allowed range: a positive number or none"),
    (["--weight-decay", "-1"], "--weight-decay -1.0 is outside the allowed range: a non-negative number"),
    (["--adan-betas", "0.9", "1.0", "0.99"], "--adan-betas 0.9 1.0 0.99 is outside the allowed range"),
    (["--num-workers", "-1"], "--num-workers -1 is outside the allowed range: a non-negative integer"),
    (["--model", "MDTv2-Q/2"], "--model 'MDTv2-Q/2' is not a MDTv2 preset"),
    (["--model", "DiT-S/2"], "--model 'DiT-S/2' is not a MDTv2 preset"),
    (["--precision", "fp16"], "argument --precision: invalid choice: 'fp16'"),
    (["--device", "tpu"], "argument --device: invalid choice: 'tpu'"),
    (["--steps", "ten"], "--steps: expected int, got 'ten'"),
]


def refused(capsys: pytest.CaptureFixture[str], call, *args) -> str:
    with pytest.raises(SystemExit) as stop:
        call(*args)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize(("flags", "message"), BAD_VALUES, ids=[" ".join(f) for f, _ in BAD_VALUES])
def test_bad_value_is_refused_up_front(flags: list[str], message: str, capsys) -> None:
    err = refused(capsys, load_recipe("mdtv2_imagenet256").RECIPE.configure, TINY + flags)
    assert message in err


@pytest.mark.parametrize("name", ["mdt_imagenet256", "dit_imagenet256"])
def test_every_training_recipe_checks_its_values(name: str, capsys) -> None:
    err = refused(capsys, load_recipe(name).RECIPE.configure, ["--data", "d", "--ema-decay", "2"])
    assert "--ema-decay 2.0 is outside the allowed range: [0, 1]" in err


def test_global_batch_must_divide_over_the_ranks(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("WORLD_SIZE", "3")
    err = refused(capsys, load_recipe("mdtv2_imagenet256").RECIPE.configure, TINY)
    assert "--global-batch-size 8 does not divide over 3 processes; use a multiple of 3" in err


def test_missing_folders_are_refused_before_loading(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    main = load_recipe("mdtv2_imagenet256").main
    missing_vae = str(tmp_path / "no-vae")
    err = refused(capsys, main, TINY + ["--data", str(tmp_path), "--vae", missing_vae, "--out", str(tmp_path / "o")])
    assert f"--vae {missing_vae!r} is not a folder (offline: HF_HUB_OFFLINE is set)" in err
    err = refused(capsys, main, TINY + ["--data", str(tmp_path / "nope"), "--vae", "none", "--out", str(tmp_path / "o")])
    assert f"--data {str(tmp_path / 'nope')!r} is not a folder" in err
    assert not (tmp_path / "o").exists()  # refused before the run folder is made


def test_sample_refuses_bad_values(tmp_path: Path) -> None:
    main = load_recipe("sample").main
    not_ckpt = tmp_path / "not-a-checkpoint"
    not_ckpt.mkdir()
    with pytest.raises(ValueError, match=f"--ckpt {str(not_ckpt)!r} is not a checkpoint"):
        main(["--ckpt", str(not_ckpt), "--device", "cpu"])
    (not_ckpt / "config.json").write_text("{}")
    with pytest.raises(ValueError, match=r"--cfg-scale 0.5 is below 1; allowed: at least 1"):
        main(["--ckpt", str(not_ckpt), "--cfg-scale", "0.5", "--device", "cpu"])
    with pytest.raises(ValueError, match=r"--seed -3 is negative"):
        main(["--ckpt", str(not_ckpt), "--seed", "-3", "--device", "cpu"])


@pytest.mark.parametrize(
    ("script", "flags", "message"),
    [
        ("mdtv2_imagenet256.py", ["--steps", "0"], "error: --steps 0 is outside the allowed range"),
        ("sample.py", ["--ckpt", "/nonexistent/ckpt"], "error: --ckpt '/nonexistent/ckpt' is not a checkpoint"),
        ("extract_latents.py", ["--out", "x", "--seed", "-1"], "error: --seed -1 is negative"),
    ],
)
def test_command_line_prints_one_error_and_exits_2(script: str, flags: list[str], message: str, tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(RECIPES / script), *flags], env=env, capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr
