"""Metrics accumulated on the device and read every N steps; JSON lines and a progress bar on rank 0."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from .distributed import Distributed

__all__ = ["Meter", "MetricsWriter", "progress_bar"]


class Meter:
    """Sums of per-step scalars kept on the device; nothing is read back until :meth:`read`."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.sums: dict[str, Tensor] = {}
        self.count = 0
        self.started = time.perf_counter()

    def add(self, **values: Float[Tensor, ""]) -> None:
        """Add one step's scalars (0-d tensors; no host sync).

        Args:
            **values: ``()``-shaped floating-point tensors on the device, one per metric
                name (e.g. ``loss``, ``grad_norm``), each in its metric's own units.
        """
        for name, value in values.items():
            value = value.detach().float()
            self.sums[name] = self.sums[name] + value if name in self.sums else value.clone()
        self.count += 1

    def read(self, dist: Distributed) -> dict[str, float]:
        """Means over the steps since the last read and over ranks, plus ``steps_per_s``; then reset.

        This is the one host sync of the loop, taken every ``log_every`` steps.
        """
        names = sorted(self.sums)
        result: dict[str, float] = {}
        if names and self.count:
            stacked = dist.mean(torch.stack([self.sums[n] for n in names]) / self.count)
            result = dict(zip(names, stacked.tolist()))
        now = time.perf_counter()
        result["steps_per_s"] = self.count / max(now - self.started, 1e-9)
        self.sums, self.count, self.started = {}, 0, now
        return result


class MetricsWriter:
    """Append-only ``metrics.jsonl``: one JSON object per line, flushed on every write (rank 0 only)."""

    def __init__(self, path: str | os.PathLike, enabled: bool = True) -> None:
        self.path = Path(path)
        self.enabled = enabled
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict[str, Any]) -> None:
        """Append ``record`` (with a wall-clock ``time``) as one line."""
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps({**record, "time": time.time()}, sort_keys=True) + "\n")


def progress_bar(total: int, initial: int, enabled: bool) -> tqdm:
    """Steps done of ``total`` with step rate and ETA (tqdm's), loss in the postfix; silent off rank 0."""
    return tqdm(total=total, initial=initial, disable=not enabled, unit="step", dynamic_ncols=True, mininterval=1.0)
