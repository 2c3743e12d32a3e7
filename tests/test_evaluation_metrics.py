"""Inception Score, statistics files, reference sources and evaluate_samples (tiny random feature network)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from mdtblocks.evaluation import (
    InceptionFeatures,
    InceptionStatistics,
    compute_statistics,
    evaluate_samples,
    frechet_distance,
    inception_score,
    load_image_array,
    torchmetrics_fid,
    unavailable_metrics,
)
from mdtblocks.io import atomic_write


class TinyNet(nn.Module):
    """A small random conv net with pool, spatial and logits outputs."""

    def __init__(self, seed: int = 0, spatial: bool = True, logits: bool = True) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(3, 6, 4, stride=4)
        self.head = nn.Linear(6, 5)
        self.spatial, self.logits = spatial, logits

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = torch.tanh(self.conv(x))  # (b, 6, 4, 4) at 16 px
        pool = h.mean((2, 3))
        out = {"pool": pool}
        if self.spatial:
            out["spatial"] = h[:, :1]  # (b, 16)
        if self.logits:
            out["logits"] = 3.0 * self.head(pool)
        return out


def tiny_extractor(**kwargs) -> InceptionFeatures:
    return InceptionFeatures(TinyNet(**kwargs), image_size=16)


def images(n: int, seed: int, size: int = 12, offset: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.integers(0, 200, size=(n, size, size, 3)) + offset, 0, 255).astype(np.uint8)


# --- Inception Score -----------------------------------------------------------------------------


def test_inception_score_uniform_is_one() -> None:
    score = inception_score(torch.zeros(20, 7), splits=4)
    assert score.mean == pytest.approx(1.0) and score.std == pytest.approx(0.0, abs=1e-12)


def test_inception_score_one_hot_is_number_of_classes() -> None:
    probs = np.eye(5)[np.tile(np.arange(5), 4)]  # 20 confident predictions, 4 per class
    with np.errstate(divide="ignore"):
        logits = np.log(probs)  # -inf for the other classes
    assert inception_score(logits, splits=1).mean == pytest.approx(5.0)
    assert inception_score(logits, splits=4) == pytest.approx((5.0, 0.0))
    # All samples predicting one class: 1.
    assert inception_score(np.log(np.eye(5)[[2] * 10] + 1e-300), splits=2).mean == pytest.approx(1.0)


def test_inception_score_matches_the_formula() -> None:
    logits = np.random.default_rng(0).normal(size=(30, 6)) * 2
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    parts = [np.exp(np.mean(np.sum(c * (np.log(c) - np.log(c.mean(0))), 1))) for c in np.array_split(p, 3)]
    assert inception_score(logits, splits=3) == pytest.approx((np.mean(parts), np.std(parts)), rel=1e-10)


def test_inception_score_bad_input() -> None:
    with pytest.raises(ValueError, match=r"splits must be in \[1, n\] for n = 3 samples, got 10"):
        inception_score(np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"shape \(n, classes\), got \(3,\)"):
        inception_score(np.zeros(3), splits=1)
    with pytest.raises(ValueError, match="NaN"):
        inception_score(np.full((3, 2), np.nan), splits=1)


# --- statistics and sources ----------------------------------------------------------------------


def save_npz(path, **arrays) -> None:
    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    atomic_write(path, write)


def test_statistics_round_trip(tmp_path) -> None:
    stats = compute_statistics(images(12, 0), tiny_extractor(), batch_size=5)
    assert stats.num_images == 12 and stats.mu.shape == (6,) and stats.mu_spatial.shape == (16,)
    assert stats.logits.shape == (12, 5)
    loaded = InceptionStatistics.load(stats.save(tmp_path / "s.npz"))
    for name in ("mu", "sigma", "mu_spatial", "sigma_spatial", "pool", "logits"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(stats, name))
    # Only means and covariances (as ADM's reference files): FID and sFID only.
    save_npz(tmp_path / "adm.npz", mu=stats.mu, sigma=stats.sigma, mu_s=stats.mu_spatial, sigma_s=stats.sigma_spatial)
    adm = compute_statistics(tmp_path / "adm.npz", tiny_extractor())
    assert adm.pool is None and adm.num_images is None
    assert set(unavailable_metrics(stats, adm)) == {"precision", "recall"}
    metrics = evaluate_samples(stats, adm)
    assert set(metrics) == {"fid", "sfid", "inception_score", "inception_score_std"}
    assert abs(metrics["fid"]) < 1e-6 and abs(metrics["sfid"]) < 1e-6


def test_folder_and_npz_sources_agree(tmp_path) -> None:
    batch = images(6, 1)
    folder = tmp_path / "ref"
    folder.mkdir()
    for i, im in enumerate(batch):  # flat names without a class prefix are fine here
        Image.fromarray(im).save(folder / f"{i:06d}.png")
    save_npz(tmp_path / "ref.npz", arr_0=batch)
    extractor = tiny_extractor()
    a = compute_statistics(folder, extractor, batch_size=4)
    b = compute_statistics(tmp_path / "ref.npz", extractor, batch_size=4)
    np.testing.assert_allclose(a.pool, b.pool, rtol=1e-6)
    # A grey image of another size joins in its own batch.
    Image.fromarray(batch[0, :, :8, 0]).save(folder / "zz_grey.png")
    assert compute_statistics(folder, extractor, batch_size=4).num_images == 7


def test_bad_sources(tmp_path) -> None:
    extractor = tiny_extractor()
    save_npz(tmp_path / "float.npz", arr_0=np.zeros((2, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match=r"'arr_0' of .*float\.npz' is float32 with shape \(2, 8, 8, 3\); expected uint8"):
        load_image_array(tmp_path / "float.npz")
    save_npz(tmp_path / "nchw.npz", arr_0=np.zeros((2, 3, 8, 8), np.uint8))
    with pytest.raises(ValueError, match=r"shape \(2, 3, 8, 8\).*channels last"):
        compute_statistics(tmp_path / "nchw.npz", extractor)
    save_npz(tmp_path / "other.npz", features=np.zeros(3))
    with pytest.raises(ValueError, match=r"has keys \['features'\]; expected 'arr_0'"):
        compute_statistics(tmp_path / "other.npz", extractor)
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(ValueError, match="neither a folder nor an .npz"):
        compute_statistics(tmp_path / "x.txt", extractor)
    with pytest.raises(FileNotFoundError, match="missing"):
        compute_statistics(tmp_path / "missing", extractor)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        compute_statistics(tmp_path / "empty", extractor)


# --- evaluate_samples and the torchmetrics cross-check ------------------------------------------------


def test_evaluate_samples_identical_and_shifted_sets() -> None:
    ref = images(40, 2)
    same = evaluate_samples(ref, ref.copy(), features=tiny_extractor(), batch_size=16)
    assert set(same) == {"fid", "sfid", "inception_score", "inception_score_std", "precision", "recall"}
    assert abs(same["fid"]) < 1e-6 and abs(same["sfid"]) < 1e-6
    assert same["precision"] == 1.0 and same["recall"] == 1.0
    shifted = evaluate_samples(images(40, 3, offset=60), ref, features=tiny_extractor(), batch_size=16)
    assert shifted["fid"] > 0.01 and shifted["precision"] < 1.0


def test_fid_matches_torchmetrics() -> None:
    pytest.importorskip("torchmetrics", reason="torchmetrics is optional (pip install torchmetrics)")
    fake, real = images(40, 4, offset=30), images(50, 5)
    extractor = tiny_extractor(spatial=False, logits=False)
    ours = evaluate_samples(fake, real, features=extractor)["fid"]
    theirs = torchmetrics_fid(fake, real, extractor, batch_size=16)
    assert ours > 0.01
    assert theirs == pytest.approx(ours, rel=1e-4)
    # Same check by hand from the statistics, with float images in [-1, 1] as input.
    as_float = lambda u: torch.from_numpy(u).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    a, b = compute_statistics(as_float(fake), extractor), compute_statistics(as_float(real), extractor)
    assert frechet_distance(a.mu, a.sigma, b.mu, b.sigma) == pytest.approx(ours, rel=1e-5)


def test_metrics_from_statistics_on_known_features() -> None:
    from mdtblocks.evaluation import feature_statistics, metrics_from_statistics

    def stats(pool: np.ndarray, spatial: np.ndarray) -> InceptionStatistics:
        return InceptionStatistics.from_features({"pool": pool, "spatial": spatial})

    # Reference on a line 0..9, samples 0.5, 3.2 (inside unit balls), 50, 51: precision 1/2, recall 6/10 (k = 1).
    ref_pool = np.array([[x, 0.0] for x in range(10)])
    fake_pool = np.array([[0.5, 0.0], [3.2, 0.0], [50.0, 0.0], [51.0, 0.0]])
    rng = np.random.default_rng(0)
    ref_sp, fake_sp = rng.normal(size=(10, 3)), rng.normal(loc=1.0, size=(4, 3))
    out = metrics_from_statistics(stats(fake_pool, fake_sp), stats(ref_pool, ref_sp), k=1)
    assert out["precision"] == 0.5 and out["recall"] == 0.6
    (m1, s1), (m2, s2) = feature_statistics(fake_sp), feature_statistics(ref_sp)
    assert out["sfid"] == pytest.approx(frechet_distance(m1, s1, m2, s2), rel=1e-12) and out["sfid"] > 0.1
    (m1, s1), (m2, s2) = feature_statistics(fake_pool), feature_statistics(ref_pool)
    assert out["fid"] == pytest.approx(frechet_distance(m1, s1, m2, s2), rel=1e-12)
    with pytest.raises(ValueError, match="sample features have 2 dimensions but the reference 3"):
        metrics_from_statistics(stats(fake_pool, fake_sp), stats(ref_sp, ref_sp))
