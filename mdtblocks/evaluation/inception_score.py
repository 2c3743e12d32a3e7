"""The Inception Score of classifier logits (Salimans et al. 2016)."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch

__all__ = ["InceptionScore", "inception_score"]


class InceptionScore(NamedTuple):
    """Result of :func:`inception_score`."""

    mean: float
    """Mean of the per-split scores (the number papers report)."""
    std: float
    """Their standard deviation (population, ``ddof=0``, as the original code)."""


def inception_score(logits: Any, splits: int = 10) -> InceptionScore:
    """``exp(E_x KL(p(y|x) || p(y)))`` on softmax probabilities, averaged over ``splits`` equal chunks.

    Follows the original TF implementation (and ADM's): the samples are cut in order
    into ``splits`` chunks (``np.array_split``), ``p(y)`` is each chunk's mean
    prediction. Logits of ``-inf`` are allowed (probability 0, contributing 0 to the KL),
    so ``log(probabilities)`` can be passed to score hand-made predictions.

    Args:
        logits: ``(n, classes)`` numpy array or tensor, ``n >= splits``.
        splits: number of chunks.

    Returns:
        ``InceptionScore(mean, std)``; 1 for identical predictions, ``classes`` for
        confident predictions spread evenly over all classes.
    """
    if isinstance(logits, np.ndarray):
        logits = torch.from_numpy(logits)
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"logits must be a numpy array or a torch tensor, got {type(logits).__name__}")
    if logits.ndim != 2 or logits.shape[1] < 1:
        raise ValueError(f"logits must have shape (n, classes), got {tuple(logits.shape)}")
    if splits < 1 or logits.shape[0] < splits:
        raise ValueError(f"splits must be in [1, n] for n = {logits.shape[0]} samples, got {splits}")
    x = logits.detach().cpu().double()
    if torch.isnan(x).any() or torch.isposinf(x).any() or torch.isneginf(x).all(dim=1).any():
        raise ValueError("logits hold NaN or +inf, or a row that is -inf everywhere")
    log_p = torch.log_softmax(x, dim=1)
    scores = []
    for chunk in torch.tensor_split(log_p, splits):
        p = chunk.exp()
        log_py = p.mean(0).log()
        # xlogy-style: p = 0 contributes 0 even where log p = -inf.
        kl = torch.where(p > 0, p * (chunk - log_py), torch.zeros_like(p)).sum(1)
        scores.append(float(kl.mean().exp()))
    return InceptionScore(mean=float(np.mean(scores)), std=float(np.std(scores)))
