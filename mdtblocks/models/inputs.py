"""Early validation of model inputs, with messages that quote the offending values."""

from __future__ import annotations

import torch
from torch import Tensor

from .config import DiTConfig

__all__ = ["check_inputs"]


def check_inputs(cfg: DiTConfig, x: object, t: object, y: object, has_null: bool, check_values: bool) -> None:
    """Raise ``TypeError``/``ValueError`` for malformed ``(x, t, y)`` before any kernel runs.

    Value checks (label range, finite times) read tensor data, which costs a host
    sync on CUDA; they are skipped when ``check_values`` is false.
    """
    for name, value in (("x", x), ("t", t), ("y", y)):
        if not isinstance(value, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    assert isinstance(x, Tensor) and isinstance(t, Tensor) and isinstance(y, Tensor)
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got dtype {x.dtype}")
    if x.ndim != 4:
        raise ValueError(f"x must have shape (b, c, h, w), got {tuple(x.shape)}")
    b, c, h, w = x.shape
    if c != cfg.in_channels:
        raise ValueError(f"x has {c} channels but the model was built for in_channels={cfg.in_channels}")
    if (h, w) != (cfg.input_size, cfg.input_size):
        hint = "" if h % cfg.patch_size == 0 and w % cfg.patch_size == 0 else f" (and {h}x{w} is not divisible by patch_size {cfg.patch_size})"
        raise ValueError(f"x is {h}x{w} but the model was built for {cfg.input_size}x{cfg.input_size}{hint}")
    if t.ndim != 1 or t.shape[0] != b:
        raise ValueError(f"t must have shape ({b},) to match x, got {tuple(t.shape)}")
    if y.ndim != 1 or y.shape[0] != b:
        raise ValueError(f"y must have shape ({b},) to match x, got {tuple(y.shape)}")
    if y.is_floating_point() or y.dtype == torch.bool:
        raise TypeError(f"y must hold integer class labels, got dtype {y.dtype}")
    if check_values and b > 0:
        hi_allowed = cfg.num_classes if has_null else cfg.num_classes - 1
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi > hi_allowed:
            null = f" (the null class {cfg.num_classes} included)" if has_null else " (this model has no null class)"
            raise ValueError(f"labels y span [{lo}, {hi}], expected values in [0, {hi_allowed}]{null}")
        # Any finite time is embedded: each objective owns its time's range and units (discrete
        # steps, continuous t in [0, 1], log-sigma that may be negative).
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = t[~torch.isfinite(t)]
            raise ValueError(f"timesteps t must be finite, got {float(bad[0])} ({bad.numel()} non-finite)")
