"""frechet_distance / feature_statistics: closed forms for Gaussians, symmetry, zero, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mdtblocks.evaluation import feature_statistics, frechet_distance


def rotation(d: int, seed: int = 0) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q


def test_diagonal_closed_form() -> None:
    # |mu1 - mu2|^2 + sum (sqrt a - sqrt b)^2 for diagonal covariances diag(a), diag(b).
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([3.0, 1.0, 2.0])
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 9.0])
    expected = 9.0 + 16.0 + (1 - 2) ** 2 + (2 - 1) ** 2 + 0.0
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)


def test_rotated_commuting_covariances() -> None:
    # R diag(a) R^T and R diag(b) R^T commute: the distance is that of the diagonal case.
    r = rotation(4)
    a, b = np.array([1.0, 2.0, 3.0, 0.5]), np.array([0.25, 8.0, 3.0, 2.0])
    s1, s2 = r @ np.diag(a) @ r.T, r @ np.diag(b) @ r.T
    mu1, mu2 = np.ones(4), np.zeros(4)
    expected = 4.0 + float(np.sum((np.sqrt(a) - np.sqrt(b)) ** 2))
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)


def test_scaled_covariance() -> None:
    # sigma2 = c^2 sigma1 (any non-diagonal sigma1): tr(sigma1) (1 - c)^2.
    r = rotation(5, seed=3)
    s1 = r @ np.diag([1.0, 2.0, 3.0, 4.0, 5.0]) @ r.T
    c = 3.0
    assert frechet_distance(np.zeros(5), s1, np.zeros(5), c**2 * s1) == pytest.approx(15.0 * (1 - c) ** 2, rel=1e-9)


def test_symmetric_zero_and_tensors() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(200, 6)), rng.normal(loc=0.5, scale=2.0, size=(300, 6))
    (m1, s1), (m2, s2) = feature_statistics(x), feature_statistics(y)
    d12, d21 = frechet_distance(m1, s1, m2, s2), frechet_distance(m2, s2, m1, s1)
    assert d12 > 1.0 and d12 == pytest.approx(d21, rel=1e-8)
    assert abs(frechet_distance(m1, s1, m1, s1)) < 1e-8
    as_tensors = [torch.from_numpy(v).float() for v in (m1, s1, m2, s2)]
    assert frechet_distance(*as_tensors) == pytest.approx(d12, rel=1e-5)


def test_feature_statistics_matches_numpy() -> None:
    x = np.random.default_rng(2).normal(size=(50, 3))
    mu, sigma = feature_statistics(torch.from_numpy(x))
    assert mu.dtype == np.float64 and sigma.shape == (3, 3)
    np.testing.assert_allclose(mu, x.mean(0))
    np.testing.assert_allclose(sigma, np.cov(x.T, ddof=1))


def test_bad_input_names_the_value() -> None:
    eye = np.eye(2)
    with pytest.raises(TypeError, match="mu1 must be a numpy array or a torch tensor, got list"):
        frechet_distance([0.0, 0.0], eye, np.zeros(2), eye)
    with pytest.raises(ValueError, match=r"sigma2 must have 2 dimension\(s\), got shape \(2,\)"):
        frechet_distance(np.zeros(2), eye, np.zeros(2), np.ones(2))
    with pytest.raises(ValueError, match=r"shapes disagree.*mu2 \(3,\)"):
        frechet_distance(np.zeros(2), eye, np.zeros(3), eye)
    with pytest.raises(ValueError, match="mu2 holds non-finite"):
        frechet_distance(np.zeros(2), eye, np.array([0.0, np.nan]), eye)
    with pytest.raises(ValueError, match="at least 2 feature vectors"):
        feature_statistics(np.zeros((1, 4)))
    with pytest.raises(TypeError, match="features must be"):
        feature_statistics("features")
