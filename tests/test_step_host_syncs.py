"""What keeps a training step free of host-device syncs, checked without a GPU.

On a GPU (``benchmarks/gpu_check.py``, under ``torch.cuda.set_sync_debug_mode``) the step
synced wherever a micro batch's draws were picked with an index tensor made on the host
(copied to the device each time), and the non-finite guard fell back to reading its flag
every step when it was given plain ``cuda`` while tensors report ``cuda:0``. These tests
pin both causes on the CPU.
"""

from __future__ import annotations

import pytest
import torch
from test_training_step import BATCH, setup, step

from mdtblocks.diffusion.objective import StepRandomness
from mdtblocks.training.distributed import Distributed
from mdtblocks.training.guard import same_device
from mdtblocks.training.loop import local_rows


def assert_same_draws(a: StepRandomness, b: StepRandomness) -> None:
    for name in ("t", "noise", "drop_label", "masked_noise", "masked_drop_label"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    for name in ("ids_keep", "ids_restore", "mask"):
        assert torch.equal(getattr(a.mask, name), getattr(b.mask, name)), name


@pytest.mark.parametrize(("world", "rank"), [(1, 0), (2, 0), (2, 1), (4, 3)])
def test_local_rows_slice_picks_the_ranks_positions(world: int, rank: int) -> None:
    """Rank r of W takes global positions r, r + W, r + 2W, ... as a slice (a view of the draws)."""
    _, _, _, _, randomness = setup()
    per_rank = BATCH // world
    rows = local_rows(Distributed(rank=rank, world_size=world, local_rank=rank, device=torch.device("cpu")), per_rank)
    assert isinstance(rows, slice)
    assert list(range(BATCH))[rows] == [rank + world * j for j in range(per_rank)]
    assert_same_draws(randomness.rows(rows), randomness.rows(torch.arange(per_rank) * world + rank))
    assert randomness.rows(rows).noise.data_ptr() == randomness.noise[rank].data_ptr()  # a view, nothing gathered


@pytest.mark.parametrize("micro", [8, 2])
def test_micro_batches_take_their_draws_by_slice(micro: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The step selects each micro batch's draws with a slice, never an index tensor."""
    model, objective, x, y, randomness = setup()
    seen: list[object] = []
    real = StepRandomness.rows

    def record(self: StepRandomness, index):  # noqa: ANN001, ANN202 - wraps the method as it is
        seen.append(index)
        return real(self, index)

    monkeypatch.setattr(StepRandomness, "rows", record)
    step(model, objective, x, y, randomness, micro=micro)
    assert len(seen) == BATCH // micro
    assert all(isinstance(index, slice) for index in seen), seen


def test_same_device_matches_plain_cuda_to_an_indexed_one() -> None:
    """A trainer given ``cuda`` must find its optimizer state (reported as ``cuda:0``) on its device."""
    cuda, cuda0, cuda1, cpu = (torch.device(d) for d in ("cuda", "cuda:0", "cuda:1", "cpu"))
    assert same_device(cuda0, cuda) and same_device(cuda0, cuda0) and same_device(cpu, cpu)
    assert not same_device(cuda1, cuda0)
    assert not same_device(cpu, cuda) and not same_device(cuda0, cpu)


def test_guard_finds_state_on_a_device_named_with_an_index() -> None:
    """The guard's restorable-state scan asks ``same_device``: ``cpu:0`` must find state the tensors report as ``cpu``."""
    from mdtblocks.training.guard import _device_state

    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    assert torch.device("cpu", 0) != torch.device("cpu")  # a plain comparison would miss the state
    state = _device_state([model], optimizer, torch.device("cpu", 0))
    assert state is not None and len(state) == 2 + 2 * 3  # weights, then step, exp_avg, exp_avg_sq of each
