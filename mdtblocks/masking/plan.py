"""The mask plan: which tokens a masked forward keeps, and how to put them back."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

__all__ = ["MaskPlan", "plan_from_ids_keep", "validate_ids_keep", "mark_kept_dynamic"]


@dataclass(frozen=True)
class MaskPlan:
    """Kept and masked tokens of a batch of patch grids of ``n`` tokens.

    Attributes:
        ids_keep: ``(b, k)`` row-major grid indices of the kept tokens.
        ids_restore: ``(b, n)`` position of each grid token in ``[kept..., masked...]``
            order; the inverse permutation of ``[ids_keep, ids_masked]``.
        mask: ``(b, n)`` float, 1 where the token is masked (dropped), 0 where kept.
    """

    ids_keep: Int[Tensor, "b k"]
    ids_restore: Int[Tensor, "b n"]
    mask: Float[Tensor, "b n"]

    @property
    def num_kept(self) -> int:
        """Kept tokens ``k`` per sample."""
        return self.ids_keep.shape[1]


def validate_ids_keep(ids_keep: object, batch_size: int, num_tokens: int, check_values: bool = True) -> None:
    """Raise ``TypeError``/``ValueError`` unless ``ids_keep`` is a valid ``(b, k)`` index set.

    Shape and dtype checks cost nothing; value checks (range, duplicates) read the
    tensor and are skipped when ``check_values`` is false (e.g. inside a compiled step).
    ``ids_keep`` is deliberately typed ``object`` (no shape annotation) so that
    malformed input reaches these checks and gets their messages.

    Args:
        ids_keep: expected an int64 (or int32) tensor of shape ``(b, k)`` with
            ``b == batch_size`` and ``1 <= k <= num_tokens``: each row holds ``k``
            distinct row-major patch-grid indices in ``[0, num_tokens)``.
        batch_size: the expected batch size ``b``.
        num_tokens: tokens ``n`` of the full patch grid.
        check_values: also check the index range and duplicates (reads the tensor).

    Raises:
        TypeError: ``ids_keep`` is not a tensor, or not an integer one.
        ValueError: wrong shape, out-of-range or duplicate indices.
    """
    if not isinstance(ids_keep, Tensor):
        raise TypeError(f"ids_keep must be a torch.Tensor, got {type(ids_keep).__name__}")
    if ids_keep.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"ids_keep must be an integer tensor (int64), got dtype {ids_keep.dtype}")
    if ids_keep.ndim != 2 or ids_keep.shape[0] != batch_size:
        raise ValueError(f"ids_keep has shape {tuple(ids_keep.shape)}, expected (batch={batch_size}, k)")
    if not 1 <= ids_keep.shape[1] <= num_tokens:
        raise ValueError(f"ids_keep keeps {ids_keep.shape[1]} tokens per sample, expected between 1 and {num_tokens}")
    if check_values:
        lo, hi = int(ids_keep.min()), int(ids_keep.max())
        if lo < 0 or hi >= num_tokens:
            raise ValueError(f"ids_keep values span [{lo}, {hi}], expected indices in [0, {num_tokens})")
        sorted_ids = ids_keep.sort(dim=1).values
        repeats = sorted_ids[:, 1:] == sorted_ids[:, :-1]
        if bool(repeats.any()):
            row, col = (int(i) for i in repeats.nonzero()[0])
            raise ValueError(
                f"ids_keep has duplicate indices within a row: row {row} holds index {int(sorted_ids[row, col])} "
                "more than once; each row must hold k distinct tokens"
            )


def plan_from_ids_keep(ids_keep: Int[Tensor, "b k"], num_tokens: int) -> MaskPlan:
    """Complete a plan from kept indices: masked tokens follow in ascending grid order.

    Any order of the kept (or masked) tokens describes the same mask; the model's
    output does not depend on it.
    """
    b, k = ids_keep.shape
    keep = torch.zeros(b, num_tokens, dtype=torch.bool, device=ids_keep.device)
    keep.scatter_(1, ids_keep, True)
    # Stable sort puts kept tokens first (in ids_keep order after the scatter below), masked after.
    rank = torch.full((b, num_tokens), num_tokens, dtype=torch.long, device=ids_keep.device)
    rank.scatter_(1, ids_keep, torch.arange(k, device=ids_keep.device).expand(b, k))
    masked_rank = torch.arange(num_tokens, device=ids_keep.device).expand(b, num_tokens) + num_tokens
    order_key = torch.where(keep, rank, masked_rank)
    ids_shuffle = order_key.argsort(dim=1)
    ids_restore = ids_shuffle.argsort(dim=1)
    return MaskPlan(ids_keep=ids_keep, ids_restore=ids_restore, mask=(~keep).float())


def mark_kept_dynamic(plan: MaskPlan) -> MaskPlan:
    """Tell ``torch.compile`` that the kept-token count ``k`` of ``plan`` varies from step to step.

    MDTv2 draws ``k`` per batch. Marked before the compiled call, the masked pass is traced
    once with a symbolic ``k`` instead of once for the first ``k`` and again, as dynamic,
    for the second (a minutes-long recompile of the whole network on a CPU); the result is
    exact, no tokens are padded. Eager code ignores the mark. Returns ``plan``.
    """
    torch._dynamo.maybe_mark_dynamic(plan.ids_keep, 1)
    return plan
