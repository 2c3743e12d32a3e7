"""Model flags are checked before anything is built: one ``error:`` line naming the value and what would be
valid, exit code 2, no traceback; the model constructors say the same thing in the same words."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from training_utils import RECIPES, load_recipe

from mdtblocks import MaskedDiffusionTransformer, MDTConfig
from mdtblocks.models.config import DiTConfig, config_problems

CASES = [
    # The three of issue 25, then the other model flags.
    # (--data: the demo's own decode_layer 2 would fit; a real run takes the preset's 6.)
    ("mdtv2_imagenet256.py", ["--model", "MDTv2-S/2", "--depth", "4", "--data", "no-such-folder"],
     "error: MDTv2-S/2's decode_layer 6 exceeds --depth 4; valid: 0 to 4 (at most --depth); give --decode-layer"),
    ("dit_imagenet256.py", ["--num-heads", "5"],
     "error: --num-heads 5 does not divide --hidden-size 128; valid: a divisor of 128: 1, 2, 4, 8, 16, 32, 64, 128"),
    ("mdt_imagenet256.py", ["--decode-layer", "99"], "error: --decode-layer 99 exceeds --depth 6; valid: 0 to 6"),
]
"""The three cases of issue 25, through the command line."""

IN_PROCESS = [
    ("mdt_imagenet256.py", ["--model", "MDT-S/2", "--depth", "1"], "error: MDT-S/2's decode_layer 2 exceeds --depth 1"),
    ("mdtv2_imagenet256.py", ["--hidden-size", "130", "--num-heads", "2"],
     "error: --hidden-size 130 is not divisible by 4 (2-D sin-cos positions); valid: a multiple of 4"),
    ("mdt_imagenet256.py", ["--image-size", "30"], "error: --image-size 30 is not divisible by MDT-S/4's patch_size 4"),
    ("dit_imagenet256.py", ["--model", "DiT-S/8", "--image-size", "12"],
     "error: --image-size 12 is not divisible by DiT-S/8's patch_size 8; valid: a multiple of 8"),
]


def run(script: str, flags: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        # --steps 1: a flag that is not refused costs one step, not the demo's minutes.
        [sys.executable, str(RECIPES / script), *flags, "--steps", "1", "--out", str(cwd / "run")],
        env=env, capture_output=True, text=True, cwd=cwd, timeout=120,
    )


@pytest.mark.parametrize(("script", "flags", "message"), IN_PROCESS, ids=[" ".join(f) for _, f, _ in IN_PROCESS])
def test_other_model_flags_are_checked_up_front(script: str, flags: list[str], message: str, capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        load_recipe(script.removesuffix(".py")).RECIPE.configure(flags)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [err.strip()] and err.startswith(message), err


@pytest.mark.parametrize(("script", "flags", "message"), CASES, ids=[" ".join(f) for _, f, _ in CASES])
def test_bad_model_flags_are_one_line_and_exit_2(script: str, flags: list[str], message: str, tmp_path: Path) -> None:
    done = run(script, flags, tmp_path)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [done.stderr.strip()], done.stderr  # one line
    assert done.stderr.startswith(message), done.stderr
    assert not (tmp_path / "run").exists()  # refused before anything was built or written


def test_model_is_checked_against_the_data_before_it_is_built(tmp_path: Path) -> None:
    """A side known only from the data (a folder of images in pixel space) is checked before the model exists."""
    for label in ("a", "b"):
        (tmp_path / "data" / label).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(np.full((10, 10, 3), 40 * i, np.uint8)).save(tmp_path / "data" / label / f"{i}.png")
    recipe = load_recipe("dit_imagenet256").RECIPE
    # DiT-S/4 on 10 px images: 10 is not a multiple of 4 (the demo flags no longer apply with --data).
    with pytest.raises(SystemExit) as stop:
        recipe.main(["--data", str(tmp_path / "data"), "--vae", "none", "--model", "DiT-S/4", "--depth", "2",
                     "--hidden-size", "32", "--num-heads", "2", "--image-size", "10", "--global-batch-size", "4",
                     "--device", "cpu", "--num-workers", "0", "--out", str(tmp_path / "run")])
    assert stop.value.code == 2
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        (dict(depth=4, decode_layer=6), ValueError),
        (dict(hidden_size=128, num_heads=5), ValueError),
        (dict(depth=6, decode_layer=99), ValueError),
        (dict(input_size=9, patch_size=2), ValueError),
        (dict(mlp_ratio=0.0), ValueError),
        (dict(mask_ratio=0.7, mask_ratio_range=0.4), ValueError),
    ],
)
def test_constructor_raises_the_same_sentence(fields: dict, error: type) -> None:
    problems = config_problems(MDTConfig, fields)
    assert problems
    with pytest.raises(error) as raised:
        MDTConfig(**fields)
    assert str(raised.value) == problems[0].message()
    assert "; valid: " in str(raised.value)


def test_a_wrong_type_is_a_type_error() -> None:
    (problem,) = config_problems(MDTConfig, dict(depth=2.5))
    assert problem.wrong_type and isinstance(problem.error(), TypeError)
    assert problem.message() == "depth 2.5 is not an int; valid: an int of at least 0"


def test_a_valid_config_has_no_problems() -> None:
    assert config_problems(MDTConfig, {}) == []
    assert config_problems(DiTConfig, dict(input_size=8, hidden_size=32, num_heads=2, depth=1)) == []
    assert config_problems(DiTConfig, dict(input_size=9), skip=["input_size"]) == []
    MaskedDiffusionTransformer(MDTConfig(input_size=8, hidden_size=32, num_heads=2, depth=2, decode_layer=1))


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--num-heads", "5"], "--num-heads 5 does not divide --hidden-size 64; valid: a divisor of 64"),
        (["--decode-layer", "9"], "--decode-layer 9 exceeds --depth 3; valid: 0 to 3"),
        (["--patch-size", "3"], "--image-size 16 is not divisible by --patch-size 3; valid: a multiple of 3"),
    ],
)
def test_the_study_checks_its_model_flags(flags: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_recipe("study_learning_speed").parse(["--quick", *flags])
