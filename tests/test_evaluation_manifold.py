"""precision_recall / knn_radii on point sets with known answers, batching invariance, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mdtblocks.evaluation import PrecisionRecall, knn_radii, precision_recall


def line(*xs: float) -> np.ndarray:
    """Points on the x axis of the plane."""
    return np.array([[x, 0.0] for x in xs])


def test_knn_radii_on_a_line() -> None:
    pts = torch.from_numpy(line(*range(10)))
    r = knn_radii(pts, k=3)
    # Point 0: neighbours 1, 2, 3 -> radius 3; point 5: 4, 6 then 3 or 7 -> radius 2 (squared values).
    assert r[0] == 9.0 and r[5] == 4.0 and r[9] == 9.0
    assert knn_radii(pts, k=1).tolist() == [1.0] * 10


def test_duplicates_are_neighbours_at_distance_zero() -> None:
    r = knn_radii(torch.from_numpy(line(0, 0, 0, 5)), k=2)
    assert r.tolist() == [0.0, 0.0, 0.0, 25.0]


def test_disjoint_clusters_give_zero() -> None:
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(30, 4)), rng.normal(size=(20, 4)) + 100.0
    assert precision_recall(real, fake) == PrecisionRecall(0.0, 0.0)


def test_identical_sets_give_one() -> None:
    x = np.random.default_rng(1).normal(size=(25, 8))
    assert precision_recall(x, x.copy(), k=3) == (1.0, 1.0)


def test_known_fractions() -> None:
    # Real 0..9 (k=1: unit balls); fake 0.5 and 3.2 fall inside, 50 and 51 outside -> precision 1/2.
    # Fake balls (k=1): 0.5 and 3.2 have radius 2.7 and cover reals 0..5; 50, 51 cover none -> recall 6/10.
    pr = precision_recall(line(*range(10)), line(0.5, 3.2, 50, 51), k=1)
    assert pr.precision == 0.5 and pr.recall == 0.6


def test_boundary_counts_as_inside() -> None:
    # -1 is at distance exactly 1 = the radius of real point 0.
    assert precision_recall(line(*range(10)), line(-1, -1), k=1).precision == 1.0
    assert precision_recall(line(*range(10)), line(-1.001, -1.001), k=1).precision == 0.0


def test_batching_dtype_and_inputs_do_not_change_the_result() -> None:
    rng = np.random.default_rng(2)
    real, fake = rng.normal(size=(40, 5)), rng.normal(loc=0.3, size=(33, 5))
    ref = precision_recall(real, fake, k=3, batch_size=1000)
    assert 0.0 < ref.precision < 1.0 and 0.0 < ref.recall < 1.0
    assert precision_recall(real, fake, k=3, batch_size=7) == ref
    assert precision_recall(torch.from_numpy(real), torch.from_numpy(fake), k=3, dtype=torch.float32) == ref
    # Brute force in numpy: same definition, written independently.
    def inside(points, centres, k):
        dc = np.linalg.norm(centres[:, None] - centres[None], axis=-1)
        radius = np.sort(dc, axis=1)[:, k]
        return np.mean((np.linalg.norm(points[:, None] - centres[None], axis=-1) <= radius).any(1))
    assert ref == (inside(fake, real, 3), inside(real, fake, 3))


def test_bad_input() -> None:
    x = np.zeros((5, 3))
    with pytest.raises(TypeError, match="real_features must be a numpy array or a torch tensor, got list"):
        precision_recall([[0.0]], x)
    with pytest.raises(ValueError, match=r"fake_features must be a non-empty \(n, d\) array.*\(5,\)"):
        precision_recall(x, np.zeros(5))
    with pytest.raises(ValueError, match="real features have 3 dimensions but fake features 4"):
        precision_recall(x, np.zeros((5, 4)))
    with pytest.raises(ValueError, match=r"k must be in \[1, 4\] for 5 points.*got 5"):
        precision_recall(x, x, k=5)
    with pytest.raises(ValueError, match="batch_size must be at least 1, got 0"):
        precision_recall(x, x, batch_size=0)
    with pytest.raises(ValueError, match="non-finite"):
        precision_recall(np.full((5, 3), np.inf), x)
