"""Per-sample random token masking with a fixed or per-batch random ratio (MDT / MDTv2)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from .plan import MaskPlan

__all__ = ["MaskSampler"]


@dataclass(frozen=True)
class MaskSampler:
    """Draws random mask plans.

    The mask ratio is ``ratio`` (MDT: 0.3) or, with ``ratio_range > 0``, drawn once per
    batch uniformly from ``[ratio, ratio + ratio_range)`` (MDTv2: 0.3 and 0.2). Each
    sample then keeps ``int(n * (1 - ratio))`` tokens chosen uniformly at random.

    Attributes:
        ratio: lower end of the mask ratio, in ``[0, 1)``.
        ratio_range: width of the interval the ratio is drawn from; 0 for a fixed ratio.
    """

    ratio: float = 0.3
    ratio_range: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.ratio < 1.0:
            raise ValueError(f"mask ratio {self.ratio} is outside [0, 1)")
        if self.ratio_range < 0 or self.ratio + self.ratio_range > 1.0:
            raise ValueError(f"mask ratio range [{self.ratio}, {self.ratio + self.ratio_range}) must lie in [0, 1]")

    def num_kept(self, num_tokens: int, ratio: float) -> int:
        """Tokens kept at a given ratio (official rounding: ``int(n * (1 - ratio))``, at least 1)."""
        return max(1, int(num_tokens * (1 - ratio)))

    def __call__(
        self, batch_size: int, num_tokens: int, *, generator: torch.Generator, device: torch.device | str | None = None
    ) -> MaskPlan:
        """Draw a plan for ``batch_size`` grids of ``num_tokens`` tokens.

        All randomness comes from ``generator`` and is drawn on its device; the plan
        is then moved to ``device``. With a CUDA generator and a random ratio, reading
        the ratio costs one host sync; pass a CPU generator to avoid it.
        """
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        gen_device = generator.device
        u = 0.0
        if self.ratio_range > 0:
            u = float(torch.rand((), generator=generator, device=gen_device))
        noise = torch.rand(batch_size, num_tokens, generator=generator, device=gen_device)
        return self.plan_from_draws(noise, u, device)

    def plan_from_draws(
        self, noise: Float[Tensor, "b n"], u: float, device: torch.device | str | None = None
    ) -> MaskPlan:
        """The plan that the uniform draws ``noise`` (one per token) and ``u`` (the ratio's) give.

        The ratio is ``ratio + ratio_range * u``; each sample keeps the ``int(n * (1 - ratio))``
        tokens of smallest noise (the official ``random_masking``), so the same draws give the
        official mask exactly.
        """
        if noise.ndim != 2:
            raise ValueError(f"mask noise must have shape (batch, num_tokens), got {tuple(noise.shape)}")
        if not 0.0 <= u < 1.0:
            raise ValueError(f"the ratio's uniform draw u must lie in [0, 1), got {u}")
        k = self.num_kept(noise.shape[1], self.ratio + self.ratio_range * u)
        ids_shuffle = noise.argsort(dim=1)
        ids_restore = ids_shuffle.argsort(dim=1)
        mask = (ids_restore >= k).float()
        target = torch.device(device) if device is not None else noise.device
        return MaskPlan(
            ids_keep=ids_shuffle[:, :k].to(target, non_blocking=True),
            ids_restore=ids_restore.to(target, non_blocking=True),
            mask=mask.to(target, non_blocking=True),
        )

    def expected_kept(self, num_tokens: int) -> float:
        """Mean tokens kept per sample (for budgeting memory and compute)."""
        lo, hi = self.num_kept(num_tokens, self.ratio), self.num_kept(num_tokens, self.ratio + self.ratio_range)
        return (lo + hi) / 2 if not math.isclose(self.ratio_range, 0.0) else float(lo)
