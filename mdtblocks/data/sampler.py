"""A shuffling, rank-splitting index sampler whose position can be saved and restored exactly."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import Sampler

__all__ = ["ResumableSampler"]


class ResumableSampler(Sampler[int]):
    """Shuffle ``range(length)`` once per epoch and hand each rank its share, resumably.

    Epoch ``e`` uses the permutation drawn by a ``torch.Generator`` seeded with
    ``seed + e`` (identical on every rank); rank ``r`` of ``W`` takes positions
    ``r, r + W, r + 2W, ...`` of it. When ``length`` is not a multiple of ``W``
    the permutation is padded with its own first entries (as
    ``DistributedSampler`` does) so every rank gets the same number of indices.

    Iterating yields the rest of the current epoch from the current position,
    then moves to the next epoch; each ``iter()`` covers one (remaining) epoch.
    A DataLoader prefetches, so the indices *yielded* run ahead of the batches
    the trainer has *used*: before saving, the trainer should call
    :meth:`set_position` with the number of samples this rank has consumed
    (``step * per_rank_batch_size``), and after loading :meth:`load_state_dict`
    restores exactly the same remaining sequence.

    Args:
        length: dataset length.
        seed: base seed; epoch ``e`` is shuffled with ``seed + e``.
        rank: this process's rank.
        world_size: number of processes.
        shuffle: ``False`` keeps the identity order (still split across ranks).
    """

    def __init__(self, length: int, *, seed: int, rank: int = 0, world_size: int = 1, shuffle: bool = True) -> None:
        if length <= 0:
            raise ValueError(f"length must be positive, got {length}")
        if world_size <= 0 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        self.length = length
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.shuffle = shuffle
        self.epoch = 0
        self.position = 0

    def __len__(self) -> int:
        """Indices per rank per epoch."""
        return -(-self.length // self.world_size)

    def epoch_indices(self, epoch: int) -> list[int]:
        """This rank's full index list for ``epoch`` (independent of the current position).

        Args:
            epoch: the epoch number.

        Returns:
            ``len(self)`` dataset indices.
        """
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed + epoch)
            order = torch.randperm(self.length, generator=gen)
        else:
            order = torch.arange(self.length)
        total = len(self) * self.world_size
        if total > self.length:  # repeat from the start (more than once when length < world_size)
            order = order.repeat(-(-total // self.length))[:total]
        return order[self.rank :: self.world_size].tolist()

    def __iter__(self) -> Iterator[int]:
        indices = self.epoch_indices(self.epoch)
        while self.position < len(indices):
            index = indices[self.position]
            self.position += 1
            yield index
        self.epoch += 1
        self.position = 0

    def set_position(self, samples_consumed: int) -> None:
        """Set epoch and position from the number of samples this rank has consumed since step 0.

        Args:
            samples_consumed: total indices used by this rank (across epochs).
        """
        if samples_consumed < 0:
            raise ValueError(f"samples_consumed must be non-negative, got {samples_consumed}")
        self.epoch, self.position = divmod(samples_consumed, len(self))

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch`` from its beginning (the ``DistributedSampler`` idiom).

        Args:
            epoch: the epoch number.
        """
        self.epoch, self.position = epoch, 0

    def state_dict(self) -> dict[str, Any]:
        """The sampler's position and the settings it must be resumed with.

        Returns:
            A JSON-serialisable dict.
        """
        return {
            "epoch": self.epoch,
            "position": self.position,
            "seed": self.seed,
            "length": self.length,
            "world_size": self.world_size,
            "shuffle": self.shuffle,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a position saved by :meth:`state_dict`.

        Args:
            state: the saved dict; its ``seed``, ``length``, ``world_size`` and
                ``shuffle`` must match this sampler's, or the sequence would differ.
        """
        for key in ("seed", "length", "world_size", "shuffle"):
            if key in state and state[key] != getattr(self, key):
                raise ValueError(
                    f"cannot resume: the saved sampler has {key}={state[key]!r} but this one has "
                    f"{key}={getattr(self, key)!r}"
                )
        epoch, position = int(state["epoch"]), int(state["position"])
        if epoch < 0 or not 0 <= position <= len(self):
            raise ValueError(f"invalid sampler state: epoch={epoch}, position={position}, epoch length {len(self)}")
        self.epoch, self.position = epoch, position
