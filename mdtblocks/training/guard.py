"""Non-finite steps: an update whose loss or gradient is NaN or infinite is skipped exactly, counted and reported.

One bad batch (an overflow, a corrupt sample) must not poison weeks of training, and a
run that only produces bad steps must stop instead of burning its allocation. The
guard decides on the device whether a step is finite and makes the update conditional:

- **Read per step** (CPU, or an optimizer with state off the device such as
  :class:`~mdtblocks.training.Adan`'s Python step counter): the flag is read back and the
  update is simply not run. On a CPU the read costs nothing.
- **On the device** (CUDA with all optimizer state on the GPU, e.g. ``AdamW(fused=True)``):
  weights, EMA and optimizer state are copied before the update and restored with
  ``torch.where`` when the flag is false, so no host sync is added; the counters are read
  at logging and checkpoint steps. This costs one extra copy of weights and state in memory.

Either way a skipped step leaves weights, EMA and optimizer state bit-identical.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import torch
from jaxtyping import Bool, Float
from torch import Tensor, nn

__all__ = ["NonFiniteGuard", "NonFiniteSteps", "same_device", "step_is_finite"]

log = logging.getLogger("mdtblocks.training")


class NonFiniteSteps(RuntimeError):
    """Too many non-finite steps in a row: the run stops (the last checkpoint is untouched)."""


def step_is_finite(loss: Float[Tensor, ""], grad_norm: Float[Tensor, ""]) -> Bool[Tensor, ""]:
    """True (on the device) when the step's loss and global gradient norm are both finite.

    A NaN or infinity in any gradient makes the global norm NaN or infinite, so the norm
    covers every parameter with a single reduction.
    """
    return torch.isfinite(loss.detach()) & torch.isfinite(grad_norm.detach())


class NonFiniteGuard:
    """Runs updates only for finite steps and counts the skipped ones (on the device).

    Args:
        device: where the counters live (the training device).
        max_bad_steps: stop after this many non-finite steps in a row.
        read_every_step: read the flag back each step and branch; ``None``: on every
            device but CUDA.
    """

    def __init__(self, device: torch.device, max_bad_steps: int = 10, read_every_step: bool | None = None) -> None:
        if max_bad_steps < 1:
            raise ValueError(f"max_bad_steps must be at least 1, got {max_bad_steps}")
        self.device = device
        self.max_bad_steps = max_bad_steps
        self.read_every_step = device.type != "cuda" if read_every_step is None else read_every_step
        zero = torch.zeros((), dtype=torch.int64, device=device)
        self.interval = zero.clone()  # bad steps since the last read
        self.in_a_row = zero.clone()  # bad steps ending at the current one
        self.worst_run = zero.clone()  # longest run of bad steps since the last read
        self.last_bad = zero.clone() - 1  # step number of the newest bad step
        self.warned = 0  # bad steps since the last read already warned about one by one

    def apply(
        self,
        finite: Bool[Tensor, ""],
        step: int,
        update: Callable[[], None],
        modules: Iterable[nn.Module],
        optimizer: torch.optim.Optimizer,
    ) -> None:
        """Run ``update`` (optimizer step, zero_grad, EMA) if ``finite``; otherwise leave every tensor unchanged.

        Args:
            finite: the step's flag from :func:`step_is_finite`.
            step: the number of the step being taken (1-based), for the warning.
            update: changes the weights of ``modules`` and the state of ``optimizer``.
            modules: everything ``update`` changes besides the optimizer state (model, EMA models).
            optimizer: the optimizer ``update`` steps.
        """
        bad = ~finite
        self.interval += bad
        self.in_a_row = torch.where(finite, torch.zeros_like(self.in_a_row), self.in_a_row + 1)
        self.worst_run = torch.maximum(self.worst_run, self.in_a_row)
        self.last_bad.masked_fill_(bad, step)
        kept = _device_state(modules, optimizer, self.device)
        if self.read_every_step or kept is None:
            if bool(finite):
                update()
                return
            optimizer.zero_grad(set_to_none=True)
            in_a_row = int(self.in_a_row)
            self.warned += 1
            log.warning("step %d: non-finite loss or gradient, update skipped (%d in a row)", step, in_a_row)
            if in_a_row >= self.max_bad_steps:
                raise NonFiniteSteps(self._message(in_a_row, step))
            return
        before = [t.clone() for t in kept]
        update()
        with torch.no_grad():
            for now, old in zip(kept, before):
                now.copy_(torch.where(finite, now, old))

    def check(self, step: int, reset: bool = True) -> int:
        """Read the counters (a host sync): warn about new bad steps, stop after too many in a row.

        Args:
            step: the current step, for the warning.
            reset: start a new reporting interval (logging steps); ``False`` only checks
                (before a checkpoint between logging steps).

        Returns:
            the bad steps since the last reset (for ``metrics.jsonl``).
        """
        interval, worst, last = (int(v) for v in torch.stack([self.interval, self.worst_run, self.last_bad]).tolist())
        if interval > self.warned:
            log.warning(
                "step %d: non-finite loss or gradient, update skipped (%d skipped since the last report, newest at "
                "step %d; %d in a row at most)", step, interval, last, worst,
            )
        if reset:
            self.interval.zero_()
            self.worst_run.copy_(self.in_a_row)
            self.warned = 0
        else:
            self.warned = interval
        if worst >= self.max_bad_steps:
            raise NonFiniteSteps(self._message(worst, last))
        return interval

    def restore_in_a_row(self, count: int) -> None:
        """Continue a run of ``count`` non-finite steps that a resumed checkpoint ended on."""
        if count < 0:
            raise ValueError(f"a run of bad steps cannot be negative, got {count}")
        self.in_a_row.fill_(count)
        self.worst_run.fill_(count)

    def in_a_row_now(self) -> int:
        """The run of non-finite steps ending at the current step (a host read; for checkpoints)."""
        return int(self.in_a_row)

    def _message(self, in_a_row: int, last: int) -> str:
        return (
            f"{in_a_row} non-finite steps in a row (newest at step {last}; --max-bad-steps {self.max_bad_steps}): "
            "stopping; the last checkpoint is untouched. Lower the learning rate, clip gradients (--grad-clip) "
            "or check the data."
        )


def _device_state(modules: Iterable[nn.Module], optimizer: torch.optim.Optimizer, device: torch.device) -> list[Tensor] | None:
    """Every tensor an update changes, if all live on ``device``; ``None`` when some state cannot be restored there.

    Missing state (before the first update) and Python numbers (Adan's step counter) cannot
    be put back with ``torch.where``; the guard then reads the flag instead.
    """
    tensors: list[Tensor] = []
    for module in modules:
        tensors += [p.data for p in module.parameters()] + list(module.buffers())
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p)
            if not state:
                return None
            for value in state.values():
                if not isinstance(value, Tensor) or not same_device(value.device, device):
                    return None
                tensors.append(value)
    return [t.to_local() if hasattr(t, "to_local") else t for t in tensors]


def same_device(actual: torch.device, wanted: torch.device) -> bool:
    """Whether a tensor on ``actual`` lives on ``wanted``; ``cuda`` without an index means any one (the current one).

    A tensor always reports its index (``cuda:0``), while a single-GPU trainer is usually
    given plain ``cuda``: comparing the two with ``==`` would find every tensor elsewhere.
    """
    return actual.type == wanted.type and (wanted.index is None or actual.index is None or actual.index == wanted.index)
