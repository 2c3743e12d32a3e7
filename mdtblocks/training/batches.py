"""An endless, resumable stream of per-rank batches: the data position is ``step * per-rank batch``."""

from __future__ import annotations

import itertools
import signal
from collections.abc import Iterator

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from ..data import ResumableSampler

__all__ = ["BatchStream"]


class _EndlessBatches(Sampler[list[int]]):
    """Group the sampler's indices into batches across epoch boundaries (no batch is dropped or short)."""

    def __init__(self, sampler: ResumableSampler, batch_size: int) -> None:
        self.sampler = sampler
        self.batch_size = batch_size

    def __iter__(self) -> Iterator[list[int]]:
        indices = itertools.chain.from_iterable(iter(self.sampler) for _ in itertools.count())
        while True:
            yield list(itertools.islice(indices, self.batch_size))


class BatchStream:
    """Batches of ``batch_size`` samples for this rank, in the order of a :class:`~mdtblocks.data.ResumableSampler`.

    Rank ``r`` of ``W`` gets positions ``r, r + W, ...`` of each epoch's permutation, so
    sample ``j`` of this rank's batch at step ``s`` is sample ``r + W * j`` of the global
    batch ``s`` (the global batch is the same whatever ``W``, when ``W`` divides the
    dataset length). The DataLoader prefetches; the position that matters for resume is
    the number of batches *consumed*, which :meth:`state_dict` reports.

    Args:
        dataset: map-style dataset of ``(x, y)``.
        batch_size: samples per rank per step.
        seed: shuffling seed.
        rank: this rank.
        world_size: number of ranks.
        num_workers: DataLoader workers (0 loads in the main process).
        pin_memory: pin host memory for faster copies to a GPU.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        *,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        self.dataset = dataset
        self.batch_size = batch_size
        self.sampler = ResumableSampler(len(dataset), seed=seed, rank=rank, world_size=world_size)  # type: ignore[arg-type]
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.consumed = 0
        self._iterator: Iterator[tuple[Tensor, Tensor]] | None = None

    def _loader(self) -> Iterator[tuple[Tensor, Tensor]]:
        loader = DataLoader(
            self.dataset,
            batch_sampler=_EndlessBatches(self.sampler, self.batch_size),
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=False,
            worker_init_fn=_ignore_interrupts if self.num_workers else None,
        )
        return iter(loader)

    def next(self) -> tuple[Tensor, ...]:
        """The next batch ``(x, y)`` (or ``(x, y, features)``) of this rank.

        Returns:
            ``x``, ``(b, *item)`` collated dataset items (e.g. ``(b, c, hh, ww)`` images or
            latents), and ``y``, ``(b,)`` int64 class labels; ``b`` is ``batch_size``.
        """
        if self._iterator is None:
            self._iterator = self._loader()
        x, y, *rest = next(self._iterator)  # a third item: stored alignment features (a cache made with them)
        self.consumed += 1
        return (x, torch.as_tensor(y, dtype=torch.long), *rest)  # type: ignore[return-value]

    def state_dict(self) -> dict:
        """The sampler state at the consumed position (JSON-serialisable)."""
        probe = ResumableSampler(
            self.sampler.length, seed=self.sampler.seed, rank=self.sampler.rank, world_size=self.sampler.world_size
        )
        probe.set_position(self.consumed * self.batch_size)
        return {"batches_consumed": self.consumed, "batch_size": self.batch_size, "sampler": probe.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Continue after the batches recorded in ``state`` (call before the first :meth:`next`)."""
        if self._iterator is not None:
            raise RuntimeError("load_state_dict must come before the first batch is drawn")
        if state.get("batch_size", self.batch_size) != self.batch_size:
            raise ValueError(
                f"cannot resume: the checkpoint was written with {state['batch_size']} samples per rank per step, "
                f"this run has {self.batch_size} (keep --global-batch-size and the number of processes)"
            )
        self.sampler.load_state_dict(state["sampler"])
        self.consumed = int(state["batches_consumed"])


def _ignore_interrupts(worker_id: int) -> None:
    """DataLoader workers ignore Ctrl-C: the trainer checkpoints and stops them itself.

    A terminal sends SIGINT to the whole process group; a worker that died of it would
    fail the next batch before the trainer could write its checkpoint.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
