"""The trainer's wiring as the recipes run it: what the metrics log, which checkpoints it refuses, worker determinism.

The step itself (update, clipping, EMA order) is checked against plain SGD in
``test_training_step.py``; here the loop around it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from training_utils import TINY, load_recipe, max_abs_diff, weights, with_flag


def run(out: Path, steps: int, *extra: str) -> list[dict]:
    load_recipe("mdtv2_imagenet256").main(
        TINY + ["--out", str(out), "--steps", str(steps), "--ckpt-every", "1", "--num-samples", "0", *extra]
    )
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_logged_grad_norm_is_the_norm_before_clipping_and_lr_is_applied(tmp_path: Path) -> None:
    # (Whether the clip and the rate act on the update is checked with SGD in test_training_step.py.)
    free = run(tmp_path / "free", 1, "--lr", "0.003")
    clipped = run(tmp_path / "clipped", 1, "--lr", "0.003", "--grad-clip", "0.01")
    assert [r["lr"] for r in free + clipped] == [0.003, 0.003]
    # Step 1 starts from the same weights: the same gradient, logged before the clip.
    assert clipped[0]["grad_norm"] > 0.1  # far above the clip
    assert clipped[0]["grad_norm"] == pytest.approx(free[0]["grad_norm"], rel=1e-6)


def test_resume_on_another_world_size_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(tmp_path, 1)
    state_file = tmp_path / "checkpoints" / "0000001" / "state.json"
    state = json.loads(state_file.read_text())
    assert state["world_size"] == 1
    state["world_size"] = 2
    state_file.write_text(json.dumps(state))
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:  # one line and exit 2, as any refused command line
        run(tmp_path, 2)
    assert stop.value.code == 2
    assert re.search(r"^error: .*0000001 was written by 2 ranks; resuming on 1 would change the data order",
                     capsys.readouterr().err, re.M)


def test_two_loader_workers_give_the_same_run(tmp_path: Path) -> None:
    run(tmp_path / "w0", 3)
    flags = with_flag(TINY, "--num-workers", "2")
    load_recipe("mdtv2_imagenet256").main(
        flags + ["--out", str(tmp_path / "w2"), "--steps", "3", "--ckpt-every", "1", "--num-samples", "0"]
    )
    for name in ("model.safetensors", "ema.safetensors"):
        assert max_abs_diff(weights(tmp_path / "w0" / "checkpoints" / "0000003", name),
                            weights(tmp_path / "w2" / "checkpoints" / "0000003", name)) == 0.0, name
