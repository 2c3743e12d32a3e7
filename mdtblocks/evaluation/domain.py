"""Quality of generated digits measured with a domain classifier: Frechet distance, class accuracy, copying."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from .classifier import DomainClassifier
from .frechet import feature_statistics, frechet_distance

__all__ = ["DomainReference", "domain_metrics", "nearest_distances"]


def nearest_distances(
    queries: Float[Tensor, "n *image"], pool: Float[Tensor, "m *image2"], batch_size: int = 256
) -> Float[Tensor, "n"]:
    """Root-mean-square pixel distance from each query image to its nearest image in ``pool``.

    Args:
        queries: ``(n, c, hh, ww)`` images.
        pool: ``(m, c, hh, ww)`` images of the same size.
        batch_size: queries per distance matrix.

    Returns:
        ``(n,)`` distances (0 for an exact copy; 2 for opposite images in [-1, 1]).
    """
    if queries.shape[1:] != pool.shape[1:]:
        raise ValueError(f"queries {tuple(queries.shape)} and pool {tuple(pool.shape)} have different image shapes")
    q = queries.flatten(1).double()
    p = pool.flatten(1).double()
    dims = q.shape[1]
    out = [torch.cdist(part, p).min(dim=1).values for part in q.split(batch_size)]
    return (torch.cat(out) / dims**0.5).float()


@dataclass
class DomainReference:
    """What the domain metrics compare samples with, computed once per study.

    Attributes:
        classifier: the trained domain classifier.
        mu: ``(f,)`` mean of the reference (training images') classifier features.
        sigma: ``(f, f)`` their covariance.
        train_images: the training images, for the nearest-neighbour check.
        holdout_nn: ``(k,)`` nearest-training-image distances of held-out real images: the
            distances a model that generalises (rather than copies) should show.
        holdout_fd: Frechet distance of the held-out images' features to the reference:
            the floor a perfect model reaches with that many samples.
    """

    classifier: DomainClassifier
    mu: np.ndarray
    sigma: np.ndarray
    train_images: Tensor
    holdout_nn: Tensor
    holdout_fd: float

    @classmethod
    def build(
        cls, classifier: DomainClassifier, train_images: Float[Tensor, "m c hh ww"], holdout_images: Float[Tensor, "k c hh ww"]
    ) -> DomainReference:
        """Featurise the training images and measure the held-out images against them.

        Args:
            classifier: the trained domain classifier.
            train_images: ``(m, c, hh, ww)`` the images the models train on.
            holdout_images: ``(k, c, hh, ww)`` real images of the same classes never trained on.
        """
        mu, sigma = feature_statistics(classifier.embed(train_images))
        hold_mu, hold_sigma = feature_statistics(classifier.embed(holdout_images))
        return cls(
            classifier=classifier,
            mu=mu,
            sigma=sigma,
            train_images=train_images,
            holdout_nn=nearest_distances(holdout_images, train_images),
            holdout_fd=frechet_distance(hold_mu, hold_sigma, mu, sigma),
        )


def domain_metrics(
    reference: DomainReference, samples: Float[Tensor, "n c hh ww"], labels: Int[Tensor, "k"]
) -> dict[str, float]:
    """Score class-conditional samples against a :class:`DomainReference`.

    Args:
        reference: the classifier and the training images' statistics.
        samples: ``(n, c, hh, ww)`` generated images in [-1, 1].
        labels: ``(n,)`` the classes they were conditioned on.

    Returns:
        ``fd``: Frechet distance of the samples' classifier features to the training
        images' (lower is better; ``reference.holdout_fd`` is what real held-out
        digits get); ``accuracy``: the fraction of samples the classifier assigns to the
        class they were conditioned on; ``nn_distance``: median RMS pixel distance of a
        sample to its nearest training image; ``nn_ratio``: that median over the same
        median for held-out real digits (near 1: as novel as real digits; well below 1:
        copies); ``copy_fraction``: the fraction of samples closer to a training image
        than 99% of held-out digits are.
    """
    if samples.ndim != 4 or labels.shape != (samples.shape[0],):
        raise ValueError(f"samples must be (n, c, h, w) with (n,) labels, got {tuple(samples.shape)} and {tuple(labels.shape)}")
    samples = samples.float().cpu().clamp(-1, 1)
    features = reference.classifier.embed(samples)
    mu, sigma = feature_statistics(features)
    predicted = reference.classifier.head(features.to(next(reference.classifier.parameters()).device)).argmax(1).cpu()
    nn = nearest_distances(samples, reference.train_images)
    holdout_median = float(reference.holdout_nn.median())
    copy_threshold = float(torch.quantile(reference.holdout_nn, 0.01))
    return {
        "fd": frechet_distance(mu, sigma, reference.mu, reference.sigma),
        "accuracy": float((predicted == labels.cpu()).float().mean()),
        "nn_distance": float(nn.median()),
        "nn_ratio": float(nn.median()) / holdout_median,
        "copy_fraction": float((nn < copy_threshold).float().mean()),
    }
