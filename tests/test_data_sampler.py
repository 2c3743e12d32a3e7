"""ResumableSampler: seeded epochs, rank splits, exact resume."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mdtblocks.data import ResumableSampler


@settings(max_examples=30, deadline=None)
@given(length=st.integers(1, 50), world_size=st.integers(1, 4), seed=st.integers(0, 100))
def test_ranks_cover_every_index_with_equal_shares(length: int, world_size: int, seed: int) -> None:
    shares = [ResumableSampler(length, seed=seed, rank=r, world_size=world_size).epoch_indices(3) for r in range(world_size)]
    assert len({len(s) for s in shares}) == 1
    flat = [i for s in shares for i in s]
    assert set(flat) == set(range(length))
    assert len(flat) - length < world_size  # padding only to even out the shares


@settings(max_examples=30, deadline=None)
@given(length=st.integers(1, 40), consumed=st.integers(0, 120), world_size=st.integers(1, 3))
def test_resume_continues_exactly(length: int, consumed: int, world_size: int) -> None:
    full = ResumableSampler(length, seed=7, rank=world_size - 1, world_size=world_size)
    stream = [i for _ in range(5) for i in full]  # five epochs in a row
    first = ResumableSampler(length, seed=7, rank=world_size - 1, world_size=world_size)
    first.set_position(consumed)
    state = first.state_dict()
    resumed = ResumableSampler(length, seed=7, rank=world_size - 1, world_size=world_size)
    resumed.load_state_dict(state)
    rest = []
    while len(rest) < len(stream) - consumed:
        rest.extend(resumed)
    assert rest[: len(stream) - consumed] == stream[consumed:]


def test_iteration_tracks_position_and_epochs_differ() -> None:
    s = ResumableSampler(10, seed=0)
    it = iter(s)
    taken = [next(it) for _ in range(4)]
    assert s.state_dict()["position"] == 4 and s.state_dict()["epoch"] == 0
    rest = list(it)
    assert sorted(taken + rest) == list(range(10))
    assert s.epoch == 1 and s.position == 0
    assert list(s) != taken + rest  # a new permutation for epoch 1
    s.set_epoch(0)
    assert list(s) == taken + rest
    assert list(ResumableSampler(5, seed=0, shuffle=False)) == [0, 1, 2, 3, 4]


def test_bad_arguments_and_mismatched_state() -> None:
    with pytest.raises(ValueError, match="rank"):
        ResumableSampler(10, seed=0, rank=2, world_size=2)
    with pytest.raises(ValueError, match="length"):
        ResumableSampler(0, seed=0)
    state = ResumableSampler(10, seed=0, world_size=2).state_dict()
    with pytest.raises(ValueError, match="world_size=2"):
        ResumableSampler(10, seed=0).load_state_dict(state)
    with pytest.raises(ValueError, match="samples_consumed"):
        ResumableSampler(10, seed=0).set_position(-1)
