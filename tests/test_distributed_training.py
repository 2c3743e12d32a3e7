"""Data parallelism: 2 Gloo processes under torchrun give the weights of 1 process with the same global batch.

Adan with clipping ignores a constant gradient scale, so equal weights alone would not catch
summing gradients over ranks or micro batches instead of averaging them: the logged gradient
norms (before clipping) are compared too. The EMA decay is 0.5, so that the EMA weights move
far from the initial ones in 3 steps and a wrong EMA shows in the comparison.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from training_utils import RECIPES, TINY, load_recipe, max_abs_diff, weights
from training_utils import torchrun as run_torchrun

FLAGS = TINY + ["--steps", "3", "--ckpt-every", "3", "--num-samples", "2", "--ema-decay", "0.5"]
FINAL = "checkpoints/0000003"


@pytest.fixture(scope="module")
def one_process(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("one")
    load_recipe("mdtv2_imagenet256").main(FLAGS + ["--out", str(out)])
    return out / FINAL


def grad_norms(final: Path) -> list[float]:
    """The logged gradient norm of each step of the run whose last checkpoint is ``final``."""
    lines = (final.parent.parent / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["grad_norm"] for line in lines]


def assert_same_run(reference: Path, other: Path, tol: float) -> None:
    for name in ("model.safetensors", "ema.safetensors"):
        diff = max_abs_diff(weights(reference, name), weights(other, name))
        assert diff < tol, f"{name}: max |run - reference| = {diff}"
    ref_norms, norms = grad_norms(reference), grad_norms(other)
    assert len(norms) == len(ref_norms) == 3
    assert norms == pytest.approx(ref_norms, rel=1e-4), "logged gradient norms differ (summed, not averaged?)"


def test_ema_moves_in_these_runs(one_process: Path) -> None:
    # Guard for the comparisons below: with decay 0.5 the EMA is far from both the model and the start.
    assert max_abs_diff(weights(one_process, "ema.safetensors"), weights(one_process)) > 1e-3


def torchrun(out: Path, *extra: str) -> None:
    result = run_torchrun(RECIPES / "mdtv2_imagenet256.py", [*FLAGS, "--out", str(out), *extra])
    assert result.returncode == 0, result.stderr[-4000:]


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_match_one(strategy: str, one_process: Path, tmp_path: Path) -> None:
    torchrun(tmp_path, *(["--fsdp"] if strategy == "fsdp" else []))
    assert_same_run(one_process, tmp_path / FINAL, 1e-5)
    assert (tmp_path / "samples" / "0000003.png").is_file()


def test_gradient_accumulation_matches_one_batch(one_process: Path, tmp_path: Path) -> None:
    load_recipe("mdtv2_imagenet256").main(FLAGS + ["--out", str(tmp_path), "--micro-batch-size", "2"])
    assert_same_run(one_process, tmp_path / FINAL, 1e-5)


def test_activation_checkpointing_changes_nothing(one_process: Path, tmp_path: Path) -> None:
    load_recipe("mdtv2_imagenet256").main(FLAGS + ["--out", str(tmp_path), "--activation-checkpointing"])
    assert_same_run(one_process, tmp_path / FINAL, 1e-6)


def test_ranks_with_different_flags_are_refused_at_start(tmp_path: Path) -> None:
    # Each rank adds --seed <its rank>: a node started with another command.
    script = tmp_path / "per_rank_seed.py"
    script.write_text(
        "import importlib.util, os, sys\n"
        f"spec = importlib.util.spec_from_file_location('recipe', {str(RECIPES / 'mdtv2_imagenet256.py')!r})\n"
        "module = importlib.util.module_from_spec(spec); sys.modules['recipe'] = module; spec.loader.exec_module(module)\n"
        "module.main(sys.argv[1:] + ['--seed', os.environ['RANK']])\n"
    )
    result = run_torchrun(script, [*FLAGS, "--out", str(tmp_path / "run")])
    assert result.returncode != 0
    assert "error: rank 1 was started with other flags than rank 0: --seed 1 (rank 0: 0)" in result.stderr
    # One line from the ranks (what follows it is torchrun's own summary of the failed workers).
    assert "Traceback" not in result.stderr.split("error: rank 1")[0]
    assert not (tmp_path / "run" / "checkpoints").exists()  # refused before any work


def rank1_fails_at_step_3(path: Path, action: str, setup: str = "") -> Path:
    """A script that runs the MDTv2 recipe with ``action`` (one statement) done by rank 1 inside step 3."""
    path.write_text(
        "import datetime, functools, importlib.util, os, sys, time\n"
        "import mdtblocks.training.loop as loop\n"
        f"{setup}"
        "real = loop.optimizer_step\n"
        "def failing(*args, step, **kwargs):\n"
        "    if os.environ['RANK'] == '1' and step == 3:\n"
        f"        {action}\n"
        "    return real(*args, step=step, **kwargs)\n"
        "loop.optimizer_step = failing\n"
        f"spec = importlib.util.spec_from_file_location('recipe', {str(RECIPES / 'mdtv2_imagenet256.py')!r})\n"
        "module = importlib.util.module_from_spec(spec); sys.modules['recipe'] = module; spec.loader.exec_module(module)\n"
        "module.main(sys.argv[1:])\n"
    )
    return path


def test_a_rank_that_raises_stops_every_rank_within_seconds(tmp_path: Path) -> None:
    # Rank 1 raises inside step 3 (after the step-2 checkpoint); rank 0 is then waiting in that step's all-reduce.
    script = rank1_fails_at_step_3(tmp_path / "rank1_raises.py", "raise RuntimeError('injected failure on rank 1 at step 3')")
    out = tmp_path / "run"
    # A hang shows as the timeout (the whole job takes about 15 s); rank 0's collective fails as soon as rank 1 exits.
    result = run_torchrun(script, [*FLAGS, "--ckpt-every", "2", "--out", str(out)], timeout=120)
    assert result.returncode != 0
    assert "injected failure on rank 1 at step 3" in result.stderr
    # Every rank stopped at once: no rank timed out in a collective, and nothing was written after step 2.
    assert "Timed out" not in result.stderr and "timeout" not in result.stderr.lower()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["0000002"]
    # The checkpoint the job left is complete: the same command minus the failure resumes from it and finishes.
    torchrun(out)
    assert sorted(p.name for p in (out / "checkpoints").iterdir())[-1] == "0000003"


def test_a_stuck_rank_makes_every_rank_fail_at_the_process_group_timeout(tmp_path: Path) -> None:
    # Rank 1 hangs inside step 3 without exiting; the job's timeout is cut from 10 minutes to 3 s.
    shorter_timeout = (
        "import mdtblocks.training.recipe.train as train\n"
        "train.setup_distributed = functools.partial(train.setup_distributed, timeout=datetime.timedelta(seconds=3))\n"
    )
    script = rank1_fails_at_step_3(tmp_path / "rank1_hangs.py", "time.sleep(3600)", shorter_timeout)
    out = tmp_path / "run"
    result = run_torchrun(script, [*FLAGS, "--ckpt-every", "2", "--out", str(out)], timeout=120)
    assert result.returncode != 0
    assert "Timed out" in result.stderr  # rank 0's collective gave up on rank 1
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["0000002"]


def test_fsdp_resume_matches_one_process(one_process: Path, tmp_path: Path) -> None:
    """FSDP on 2 ranks stopped after its step-1 checkpoint and rerun ends like the uninterrupted 1-process run."""
    torchrun(tmp_path, "--fsdp", "--steps", "1", "--ckpt-every", "1")  # later flags win
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["0000001"]
    torchrun(tmp_path, "--fsdp")  # the same command as the straight run: resumes at step 1
    assert_same_run(one_process, tmp_path / FINAL, 1e-5)
