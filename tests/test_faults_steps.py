"""Fault suite, non-finite steps: a NaN batch or an infinite gradient skips the update exactly, is counted, and
too many in a row stop the run with the last checkpoint intact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from training_utils import TINY, load_recipe, max_abs_diff, weights

from mdtblocks.training import latest_checkpoint
from mdtblocks.training import loop as loop_module
from mdtblocks.training.guard import NonFiniteGuard, NonFiniteSteps


def run(out: Path, steps: int, *extra: str) -> None:
    load_recipe("mdtv2_imagenet256").main(
        TINY + ["--out", str(out), "--steps", str(steps), "--ckpt-every", "1", "--num-samples", "0", *extra]
    )


def poison_batches(monkeypatch: pytest.MonkeyPatch, bad_calls: set[int] | None = None, from_call: int | None = None) -> None:
    """Make the encoded batch of chosen steps (1-based calls of ``encode``) all NaN."""
    real = loop_module.encode
    calls = {"n": 0}

    def encode(autoencoder, x, generator):
        calls["n"] += 1
        z = real(autoencoder, x, generator)
        n = calls["n"]
        if (bad_calls and n in bad_calls) or (from_call is not None and n >= from_call):
            z = torch.full_like(z, float("nan"))
        return z

    monkeypatch.setattr(loop_module, "encode", encode)


def optimizer_tensors(ckpt: Path) -> list:
    state = torch.load(ckpt / "optimizer.pt", weights_only=True)["state"]
    return [(k, name, v) for k in sorted(state) for name, v in sorted(state[k].items())]


def assert_same_optimizer_state(a: Path, b: Path) -> None:
    for (ka, na, va), (kb, nb, vb) in zip(optimizer_tensors(a), optimizer_tensors(b), strict=True):
        assert (ka, na) == (kb, nb)
        if isinstance(va, torch.Tensor):
            assert torch.equal(va, vb), (ka, na)
        else:
            assert va == vb, (ka, na)  # Adan's step counter


def test_nan_batch_skips_the_update_exactly(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys) -> None:
    poison_batches(monkeypatch, bad_calls={3})
    run(tmp_path, 4)
    ckpts = tmp_path / "checkpoints"
    for name in ("model.safetensors", "ema.safetensors"):
        assert max_abs_diff(weights(ckpts / "0000002", name), weights(ckpts / "0000003", name)) == 0.0, name
        assert max_abs_diff(weights(ckpts / "0000003", name), weights(ckpts / "0000004", name)) > 0.0, name
    assert_same_optimizer_state(ckpts / "0000002", ckpts / "0000003")
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["bad_steps"] for r in records] == [0, 0, 1, 0]
    assert "step 3: non-finite loss or gradient, update skipped (1 in a row)" in capsys.readouterr().err


def test_infinite_gradient_skips_the_update(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real = loop_module.accumulate_gradients
    calls = {"n": 0}

    def accumulate(denoiser, objective, latents, y, randomness, micro, accum, *rest):
        calls["n"] += 1
        totals = real(denoiser, objective, latents, y, randomness, micro, accum, *rest)
        if calls["n"] == 2:  # one gradient entry infinite, the loss finite
            p = next(q for q in denoiser.parameters() if q.grad is not None)
            p.grad.view(-1)[0] = float("inf")
        return totals

    monkeypatch.setattr(loop_module, "accumulate_gradients", accumulate)
    run(tmp_path, 2)
    ckpts = tmp_path / "checkpoints"
    for name in ("model.safetensors", "ema.safetensors"):
        assert max_abs_diff(weights(ckpts / "0000001", name), weights(ckpts / "0000002", name)) == 0.0, name
    assert_same_optimizer_state(ckpts / "0000001", ckpts / "0000002")


def test_too_many_bad_steps_in_a_row_stop_the_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys) -> None:
    poison_batches(monkeypatch, from_call=2)
    with pytest.raises(SystemExit) as stop:
        run(tmp_path, 20, "--max-bad-steps", "3")
    assert stop.value.code == 1
    err = capsys.readouterr().err
    assert "error: 3 non-finite steps in a row (newest at step 4; --max-bad-steps 3)" in err
    assert "Traceback" not in err
    # Steps 2 and 3 were skipped (their checkpoints equal step 1's); step 4 stopped before checkpointing.
    assert latest_checkpoint(tmp_path).name == "0000003"
    ckpts = tmp_path / "checkpoints"
    assert max_abs_diff(weights(ckpts / "0000001"), weights(ckpts / "0000003")) == 0.0


def tiny_setup() -> tuple[torch.nn.Module, torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model, ema = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    ema.load_state_dict(model.state_dict())
    return model, ema, torch.optim.AdamW(model.parameters(), lr=0.1, foreach=True)


def guarded_step(guard: NonFiniteGuard, model, ema, opt, step: int, grad_value: float | None = None) -> None:
    model(torch.ones(4, 3)).pow(2).sum().backward()
    if grad_value is not None:
        model.weight.grad[0, 0] = grad_value
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))

    def update() -> None:
        opt.step()
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), model.parameters()):
                pe.lerp_(p, 0.5)

    guard.apply(torch.isfinite(norm), step, update, [model, ema], opt)


def snapshot(model, ema, opt) -> list[torch.Tensor]:
    state = [v for s in opt.state.values() for v in s.values()]
    return [t.detach().clone() for t in [*model.parameters(), *ema.parameters(), *state]]


@pytest.mark.parametrize("read_every_step", [True, False])
def test_guard_restores_every_tensor_without_reading_the_flag(read_every_step: bool) -> None:
    """The device path (the one CUDA takes: no flag read) restores weights, EMA and optimizer state bit for bit."""
    model, ema, opt = tiny_setup()
    guard = NonFiniteGuard(torch.device("cpu"), max_bad_steps=2, read_every_step=read_every_step)
    guarded_step(guard, model, ema, opt, 1)  # creates the optimizer state
    before = snapshot(model, ema, opt)
    guarded_step(guard, model, ema, opt, 2, grad_value=float("nan"))
    after = snapshot(model, ema, opt)
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
    assert all(p.grad is None for p in model.parameters())
    assert guard.check(2, reset=False) == 1  # a checkpoint-time check keeps the count for the next record
    assert guard.check(2) == 1
    assert guard.check(2) == 0
    guarded_step(guard, model, ema, opt, 3)  # a good step updates again
    assert not torch.equal(before[0], model.weight)
    guarded_step(guard, model, ema, opt, 4, grad_value=float("inf"))
    with pytest.raises(NonFiniteSteps, match="2 non-finite steps in a row"):
        guarded_step(guard, model, ema, opt, 5, grad_value=float("inf"))
        guard.check(5)


def test_a_run_of_bad_steps_continues_across_a_resume(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys) -> None:
    """Two bad steps before a checkpoint and one after resuming are three in a row: --max-bad-steps 3 stops."""
    poison_batches(monkeypatch, bad_calls={2, 3})
    run(tmp_path, 3, "--max-bad-steps", "3")
    assert json.loads((tmp_path / "checkpoints/0000003/state.json").read_text())["bad_steps_in_a_row"] == 2
    poison_batches(monkeypatch, bad_calls={1})  # the resumed process's first step (step 4)
    with pytest.raises(SystemExit) as stop:
        run(tmp_path, 6, "--max-bad-steps", "3")
    assert stop.value.code == 1
    assert "error: 3 non-finite steps in a row (newest at step 4; --max-bad-steps 3)" in capsys.readouterr().err
    assert latest_checkpoint(tmp_path).name == "0000003"


def test_a_good_step_after_resume_ends_the_run_of_bad_steps(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    poison_batches(monkeypatch, bad_calls={2, 3})
    run(tmp_path, 3, "--max-bad-steps", "3")
    poison_batches(monkeypatch, bad_calls={2})  # step 4 good, step 5 bad: 1 in a row
    run(tmp_path, 5, "--max-bad-steps", "3")
    assert json.loads((tmp_path / "checkpoints/0000004/state.json").read_text())["bad_steps_in_a_row"] == 0
    assert json.loads((tmp_path / "checkpoints/0000005/state.json").read_text())["bad_steps_in_a_row"] == 1
