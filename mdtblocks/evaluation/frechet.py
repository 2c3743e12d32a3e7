"""The Frechet distance between two Gaussians, and the feature statistics it compares."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import scipy.linalg
import torch

__all__ = ["frechet_distance", "feature_statistics"]


def _as_float64(name: str, value: Any, ndim: int) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().double().numpy()
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(value).__name__}")
    array = np.asarray(value, dtype=np.float64)
    if array.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} holds non-finite values (NaN or inf)")
    return array


def feature_statistics(features: Any) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (``ddof=1``, as every FID tool computes it) of ``(n, d)`` features, in float64.

    Args:
        features: ``(n, d)`` numpy array or tensor, ``n >= 2``.

    Returns:
        ``(mu, sigma)``: ``(d,)`` and ``(d, d)`` float64 arrays.
    """
    x = _as_float64("features", features, 2)
    if x.shape[0] < 2:
        raise ValueError(f"need at least 2 feature vectors for a covariance, got {x.shape[0]}")
    return x.mean(axis=0), np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1])


def frechet_distance(mu1: Any, sigma1: Any, mu2: Any, sigma2: Any, eps: float = 1e-6) -> float:
    """Frechet (2-Wasserstein) distance between ``N(mu1, sigma1)`` and ``N(mu2, sigma2)``, in float64.

    ``|mu1 - mu2|^2 + tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2))``: FID when the
    statistics are those of Inception pool3 features. The matrix square root is
    scipy's ``sqrtm``; when the product is singular (fewer samples than feature
    dimensions) ``eps`` is added to both diagonals, and a tiny imaginary part from
    round-off is dropped, as the ADM and pytorch-fid tools do.

    Args:
        mu1: ``(d,)`` mean (numpy array or tensor).
        sigma1: ``(d, d)`` covariance.
        mu2: ``(d,)`` mean.
        sigma2: ``(d, d)`` covariance.
        eps: diagonal offset used only when the product is singular.

    Returns:
        The distance, a Python float (0 for identical statistics).
    """
    m1, m2 = _as_float64("mu1", mu1, 1), _as_float64("mu2", mu2, 1)
    s1, s2 = _as_float64("sigma1", sigma1, 2), _as_float64("sigma2", sigma2, 2)
    d = m1.shape[0]
    if m2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(
            f"shapes disagree: mu1 {m1.shape}, sigma1 {s1.shape}, mu2 {m2.shape}, sigma2 {s2.shape}; "
            f"expected ({d},) means and ({d}, {d}) covariances"
        )
    diff = m1 - m2
    with warnings.catch_warnings():
        warnings.simplefilter("error", scipy.linalg.LinAlgWarning)
        try:
            covmean = scipy.linalg.sqrtm(s1 @ s2)
            singular = not np.isfinite(covmean).all()
        except scipy.linalg.LinAlgWarning:
            singular = True
    if singular:
        offset = np.eye(d) * eps
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
            covmean = scipy.linalg.sqrtm((s1 + offset) @ (s2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"the covariance product has a large imaginary square root ({np.max(np.abs(covmean.imag)):.3g})")
        covmean = covmean.real
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))
