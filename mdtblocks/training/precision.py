"""The one precision boundary of training: the backbone's forward under autocast, everything else fp32."""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor, nn

__all__ = ["autocast", "AutocastForward"]


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    """``torch.autocast`` to bf16 on ``device`` for ``"bf16"``, nothing for ``"fp32"``."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    raise ValueError(f"precision {precision!r} is not 'fp32' or 'bf16'")


class AutocastForward(nn.Module):
    """Runs ``module``'s forward under :func:`autocast` and returns fp32.

    The diffusion process calls this; its own math (noising, loss, variance terms)
    stays outside autocast, in fp32, as do the weights and the optimizer. The wrapped
    network is ``.module`` (as with DDP), so code that unwraps models finds it.
    """

    def __init__(self, module: nn.Module, device: torch.device, precision: str) -> None:
        super().__init__()
        autocast(device, precision)  # validate early
        self.module = module
        self.device = device
        self.precision = precision

    def forward(self, *args: Any, **kwargs: Any) -> Float[Tensor, "b c2 hh ww"]:
        """Call the wrapped network under autocast; the output is cast back to fp32.

        Args:
            *args: passed to the wrapped network, typically ``(x, t, y)``: ``(b, c, hh, ww)``
                noisy input, ``(b,)`` timesteps and ``(b,)`` labels.
            **kwargs: passed to the wrapped network (e.g. ``ids_keep``, ``(b, k)``).

        Returns:
            ``(b, c2, hh, ww)`` the network's output in fp32.
        """
        with autocast(self.device, self.precision):
            out = self.module(*args, **kwargs)
        return out.float()

    def no_sync(self) -> contextlib.AbstractContextManager[Any]:
        """DDP's ``no_sync`` (skip the gradient all-reduce) of the wrapped network; nothing to skip without DDP."""
        inner = getattr(self.module, "no_sync", None)
        return inner() if callable(inner) else contextlib.nullcontext()
