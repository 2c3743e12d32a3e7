"""Adan, the adaptive Nesterov momentum optimizer MDTv2 trains with (Xie et al. 2022)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from jaxtyping import Shaped
from torch import Tensor

__all__ = ["Adan"]


class Adan(torch.optim.Optimizer):
    """Adan: Adaptive Nesterov Momentum (Xie, Zhou, Li, Lin, Yan 2022, arXiv:2208.06677), Algorithm 1.

    With gradient ``g_k`` and its change ``d_k = g_k - g_{k-1}`` (zero at the
    first step), three moving averages are kept (the betas here are the
    "keep" rates, i.e. one minus the paper's beta_1, beta_2, beta_3)::

        m_k = b1 * m + (1 - b1) * g_k                      first moment
        v_k = b2 * v + (1 - b2) * d_k                      moment of the gradient change
        n_k = b3 * n + (1 - b3) * (g_k + b2 * d_k) ** 2    second moment of the Nesterov gradient

    each bias-corrected by ``1 - b ** k``, and the step is
    ``u = (m_hat + b2 * v_hat) / (sqrt(n_hat) + eps)``. Weight decay is the
    paper's proximal form (``no_prox=False``): ``p <- (p - lr * u) / (1 + lr * wd)``;
    ``no_prox=True`` uses decoupled decay ``p <- p * (1 - lr * wd) - lr * u``.
    MDTv2 uses betas ``(0.98, 0.92, 0.99)`` and no weight decay; gradient
    clipping is the trainer's job (``clip_grad_norm_`` before ``step``).

    The state (``step`` as an int; ``exp_avg``, ``exp_avg_diff``,
    ``exp_avg_sq``, ``prev_grad`` as tensors) round-trips through
    ``torch.save`` / ``torch.load(weights_only=True)``.

    Args:
        params: parameters or parameter groups.
        lr: learning rate.
        betas: ``(b1, b2, b3)`` decay rates of the three averages, each in [0, 1).
        eps: added to the denominator.
        weight_decay: decay strength (0 disables it).
        no_prox: decoupled instead of proximal weight decay.
    """

    def __init__(
        self,
        params: Iterable[Shaped[Tensor, "..."]] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, ...] = (0.98, 0.92, 0.99),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        no_prox: bool = False,
    ) -> None:
        if not lr >= 0.0:
            raise ValueError(f"learning rate must be non-negative, got {lr}")
        if len(betas) != 3 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"betas must be three numbers in [0, 1), got {betas}")
        if not eps >= 0.0:
            raise ValueError(f"eps must be non-negative, got {eps}")
        if not weight_decay >= 0.0:
            raise ValueError(f"weight_decay must be non-negative, got {weight_decay}")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, no_prox=no_prox)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Apply one Adan update to every parameter that has a gradient.

        Args:
            closure: re-evaluates the model and returns the loss (optional).

        Returns:
            The closure's loss, or ``None``.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
            b1, b2, b3 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if grad.is_sparse:
                    raise TypeError("Adan does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_diff"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["prev_grad"] = grad.clone()  # so the first gradient change is zero
                state["step"] += 1
                k = state["step"]
                m, v, n, prev = state["exp_avg"], state["exp_avg_diff"], state["exp_avg_sq"], state["prev_grad"]

                diff = grad - prev
                m.mul_(b1).add_(grad, alpha=1.0 - b1)
                v.mul_(b2).add_(diff, alpha=1.0 - b2)
                nesterov = grad + b2 * diff  # the gradient at the extrapolated point, to first order
                n.mul_(b3).addcmul_(nesterov, nesterov, value=1.0 - b3)
                prev.copy_(grad)

                bc1, bc2, bc3 = 1.0 - b1**k, 1.0 - b2**k, 1.0 - b3**k
                denom = n.sqrt().div_(math.sqrt(bc3)).add_(eps)
                update = (m / bc1).add_(v, alpha=b2 / bc2).div_(denom)
                if group["no_prox"]:
                    p.mul_(1.0 - lr * wd).add_(update, alpha=-lr)
                else:
                    p.add_(update, alpha=-lr).div_(1.0 + lr * wd)
        return loss
