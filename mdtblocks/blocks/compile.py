"""Regional compilation: ``torch.compile`` each transformer block instead of the whole model.

A whole-model ``torch.compile`` of MDT traces the plain pass, the masked pass (whose kept-token
count changes every step) and their backward passes as separate graphs of the full network,
which took minutes on a CPU and over three minutes for MDTv2-XL/2 on an H200. Every block of
a model runs the same ``forward``, so compiling the blocks one by one gives dynamo one code
object to trace: the graphs it keeps are one per block *kind* (with or without a fused skip
stream, first block in fp32 or the rest in bf16 under autocast), per token count (the kept
count becomes a dynamic dimension after the first change) and per grad mode, shared by all
blocks of that kind. The patch embedding, conditioning, masking and final layer stay eager.
"""

from __future__ import annotations

from typing import Any

import torch
import torch._dynamo
from torch import nn

from .transformer_block import AdaLNBlock

__all__ = ["RECOMPILE_LIMIT", "compile_blocks"]

RECOMPILE_LIMIT = 64
"""Dynamo's graphs per code object raised to this for :func:`compile_blocks` (its default, 8,
is fewer than MDTv2's block kinds times token counts times grad modes: the rest would run eager)."""


def compile_blocks(model: nn.Module, **compile_kwargs: Any) -> int:
    """Compile every :class:`~mdtblocks.blocks.AdaLNBlock` of ``model`` in place; returns how many.

    The model keeps its structure and parameter names (checkpoints, EMA and FSDP see the same
    module tree), unlike the ``_orig_mod`` wrapper of a whole-model ``torch.compile``.

    Args:
        model: any module holding ``AdaLNBlock``s (MDT, MDTv2, DiT, a model of your own).
        **compile_kwargs: passed to :meth:`torch.nn.Module.compile` (``backend``, ``mode``, ...).

    Raises:
        ValueError: ``model`` has no ``AdaLNBlock``.
    """
    blocks = [m for m in model.modules() if isinstance(m, AdaLNBlock)]
    if not blocks:
        raise ValueError(f"compile_blocks found no AdaLNBlock in {type(model).__name__}; use torch.compile(model)")
    config = torch._dynamo.config
    config.recompile_limit = max(config.recompile_limit, RECOMPILE_LIMIT)
    for block in blocks:
        block.compile(**compile_kwargs)
    return len(blocks)
