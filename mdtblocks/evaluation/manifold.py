"""Improved precision and recall: k-nearest-neighbour manifolds of real and generated features.

Kynkaanniemi et al., "Improved Precision and Recall Metric for Assessing Generative
Models" (NeurIPS 2019), as ADM's evaluation suite computes it (``ManifoldEstimator``,
k = 3 on Inception pool3 features). Each point of a set spans a ball whose radius is the
distance to its k-th nearest neighbour in the same set (itself excluded); the manifold
is the union of the balls. Precision is the fraction of generated points inside the
real manifold, recall the fraction of real points inside the generated manifold. A point
exactly on a ball's boundary counts as inside (``<=``, as ADM).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

__all__ = ["PrecisionRecall", "fraction_inside", "knn_radii", "precision_recall"]


class PrecisionRecall(NamedTuple):
    """Result of :func:`precision_recall`."""

    precision: float
    """Fraction of generated samples inside the real manifold (fidelity)."""
    recall: float
    """Fraction of real samples inside the generated manifold (coverage)."""


def _as_features(name: str, value: Any, dtype: torch.dtype, device: torch.device | str) -> Tensor:
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(value).__name__}")
    if value.ndim != 2 or value.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty (n, d) array of feature vectors, got shape {tuple(value.shape)}")
    value = value.detach().to(device=device, dtype=dtype)
    if not torch.isfinite(value).all():
        raise ValueError(f"{name} holds non-finite values (NaN or inf)")
    return value


def _squared_distances(a: Float[Tensor, "m d"], b: Float[Tensor, "n d"]) -> Float[Tensor, "m n"]:
    # |a|^2 + |b|^2 - 2 a.b (one matrix product, as ADM); clamped because round-off can go below 0.
    d2 = a.square().sum(1, keepdim=True) + b.square().sum(1)[None, :] - 2.0 * (a @ b.T)
    return d2.clamp_min_(0.0)


def knn_radii(features: Float[Tensor, "n d"], k: int = 3, batch_size: int = 10000) -> Float[Tensor, " n"]:
    """Squared distance from each point to its k-th nearest neighbour in the same set, the point itself excluded.

    A duplicate of a point counts as a neighbour at distance 0.

    Args:
        features: the set, ``n > k`` points.
        k: neighbourhood size.
        batch_size: rows of the distance matrix computed at once.

    Returns:
        ``(n,)`` squared radii, in the features' dtype and device.
    """
    n = features.shape[0]
    if not 1 <= k < n:
        raise ValueError(f"k must be in [1, {n - 1}] for {n} points (the k-th neighbour other than the point), got {k}")
    radii = []
    for start in range(0, n, batch_size):
        d2 = _squared_distances(features[start : start + batch_size], features)
        # The (k+1)-th smallest, since each row holds the point's distance 0 to itself.
        radii.append(d2.kthvalue(k + 1, dim=1).values)
    return torch.cat(radii)


def fraction_inside(
    points: Float[Tensor, "m d"], centres: Float[Tensor, "n d"], radii: Float[Tensor, " n"], batch_size: int = 10000
) -> float:
    """Fraction of ``points`` within some ball ``|x - centres[j]|^2 <= radii[j]``.

    Args:
        points: the points to test.
        centres: the ball centres.
        radii: their squared radii.
        batch_size: points tested at once.

    Returns:
        The fraction, in ``[0, 1]``.
    """
    inside = 0
    for start in range(0, points.shape[0], batch_size):
        d2 = _squared_distances(points[start : start + batch_size], centres)
        inside += int((d2 <= radii[None, :]).any(dim=1).sum())
    return inside / points.shape[0]


def precision_recall(
    real_features: Any,
    fake_features: Any,
    k: int = 3,
    batch_size: int = 10000,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
) -> PrecisionRecall:
    """Improved precision and recall (Kynkaanniemi et al. 2019) of generated against real features.

    Distances are computed in ``dtype`` (float64 by default: exact enough that points on a
    ball's boundary are decided by the data, not by round-off; float32 halves the cost on
    a GPU, as ADM uses, at the price of such ties).

    Args:
        real_features: ``(n, d)`` numpy array or tensor, ``n > k``.
        fake_features: ``(m, d)``, ``m > k``.
        k: neighbourhood size (3 in the paper and ADM).
        batch_size: rows of each distance matrix computed at once (memory: ``batch_size x max(n, m)``).
        dtype: floating dtype of the distance computation.
        device: where to compute.

    Returns:
        ``PrecisionRecall(precision, recall)``.
    """
    if not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating point dtype, got {dtype}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    real = _as_features("real_features", real_features, dtype, device)
    fake = _as_features("fake_features", fake_features, dtype, device)
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"real features have {real.shape[1]} dimensions but fake features {fake.shape[1]}")
    real_radii = knn_radii(real, k, batch_size)
    fake_radii = knn_radii(fake, k, batch_size)
    return PrecisionRecall(
        precision=fraction_inside(fake, real, real_radii, batch_size),
        recall=fraction_inside(real, fake, fake_radii, batch_size),
    )
