"""A feature tap: the tokens one block of a backbone emits, recorded on the way through ``forward``."""

from __future__ import annotations

from typing import Any

from jaxtyping import Float, Int
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

__all__ = ["FeatureTap"]


class FeatureTap:
    """Records the output tokens of the backbone's block ``depth`` at every forward.

    The tap is a forward hook: the model's code is unchanged, and the recorded tensor
    keeps its graph, so a loss on it trains the blocks up to ``depth``. Which tokens the
    block sees depends on the pass:

    - DiT, and MDT's plain pass: all ``n`` tokens, in row-major grid order.
    - MDT's masked pass (``ids_keep`` given): the encoder blocks
      (``depth <= model.kept_only_blocks``) see only the ``k`` kept tokens, in
      ``ids_keep`` order; the decoder blocks, after the side-interpolater, see all ``n``
      again. :meth:`ids_for` says which, so that targets can be gathered to match.

    With MDT's two passes per step, each forward overwrites the record: take the tokens
    (:meth:`pop`) right after the pass to be aligned.

    Args:
        model: a :class:`~mdtblocks.models.base.DiffusionBackbone` (unwrapped: not the DDP
            or compiled wrapper; hooks on its blocks fire inside those wrappers).
        depth: 1-based block index; REPA taps block 8 of SiT-XL's 28.

    Raises:
        ValueError: ``depth`` is past the network's depth.
    """

    def __init__(self, model: nn.Module, depth: int) -> None:
        block_at = getattr(model, "block_at", None)
        if block_at is None:
            raise TypeError(f"a feature tap needs a DiffusionBackbone (with block_at), got {type(model).__name__}")
        self.depth = depth
        self.block = block_at(depth)
        self.kept_only = depth <= int(getattr(model, "kept_only_blocks", 0))
        self._tokens: Tensor | None = None
        self._handle: RemovableHandle | None = self.block.register_forward_hook(self._record)

    def _record(self, module: nn.Module, args: Any, output: Tensor) -> None:
        self._tokens = output

    def pop(self) -> Float[Tensor, "b n_or_k d"]:
        """The tokens of the latest forward, forgetting them (so that a stale record is never reused).

        Raises:
            RuntimeError: no forward has run since the last ``pop`` (or the tap was removed).
        """
        if self._tokens is None:
            raise RuntimeError(f"the tap at block {self.depth} recorded nothing: run the model's forward first")
        tokens, self._tokens = self._tokens, None
        return tokens

    def ids_for(self, ids_keep: Int[Tensor, "b k"] | None) -> Int[Tensor, "b k"] | None:
        """The indices to gather targets with: ``ids_keep`` if this block saw only the kept tokens, else ``None``."""
        return ids_keep if (ids_keep is not None and self.kept_only) else None

    def remove(self) -> None:
        """Detach the hook (idempotent)."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        self._tokens = None

    def __enter__(self) -> FeatureTap:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()
