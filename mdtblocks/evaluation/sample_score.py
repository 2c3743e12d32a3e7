"""Class accuracy of a run's sample grids: a domain classifier says whether each sample shows its class."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
from jaxtyping import Float, Int
from torch import Tensor
from torch.utils.data import Subset

from ..data import DigitsDataset
from .classifier import DomainClassifier, train_classifier

__all__ = ["SampleScorer", "digits_scorer"]


@dataclass(frozen=True)
class SampleScorer:
    """Scores class-conditional samples with a classifier of their domain.

    Attributes:
        classifier: a trained :class:`~mdtblocks.evaluation.DomainClassifier` for the data.
        held_out_accuracy: its accuracy on real held-out images (the ceiling the samples' score is read against).
    """

    classifier: DomainClassifier
    held_out_accuracy: float

    @torch.no_grad()
    def __call__(self, images: Float[Tensor, "n c hh ww"], labels: Int[Tensor, "n"]) -> dict[str, float]:
        """``{"sample_class_accuracy": fraction of samples classified as their label}`` (images in ``[-1, 1]``)."""
        if images.ndim != 4 or labels.shape != (images.shape[0],):
            raise ValueError(
                f"need (n, c, h, w) images and (n,) labels, got {tuple(images.shape)} and {tuple(labels.shape)}"
            )
        predicted = self.classifier.predict(images.float().cpu().clamp(-1, 1))
        return {"sample_class_accuracy": float((predicted == labels.cpu()).float().mean())}


@lru_cache(maxsize=4)
def digits_scorer(image_size: int, channels: int = 1, epochs: int = 6, seed: int = 0) -> SampleScorer:
    """A scorer for the built-in digits: a classifier trained on the unmirrored digits (seconds on a CPU core).

    Trained once per process and setting (cached).

    It learns from the first 1,500 of the 1,797 digits and is measured on the other 297.
    Mirrored digits (the built-in data's flipped copies) are not in its training set, so
    a sample scores as its class only when it shows the digit as written.

    Args:
        image_size: the side the run's samples have.
        channels: their channels (the classifier reads the first).
        epochs: classifier epochs.
        seed: classifier seed.
    """
    digits = DigitsDataset(image_size=image_size, channels=1, flip=False)
    train_part = Subset(digits, range(1500))
    classifier = train_classifier(train_part, num_classes=10, epochs=epochs, seed=seed, shift=1)
    held = [digits[i] for i in range(1500, len(digits))]
    images = torch.stack([torch.as_tensor(x) for x, _ in held])
    labels = torch.as_tensor([int(y) for _, y in held])
    accuracy = float((classifier.predict(images) == labels).float().mean())
    scorer = SampleScorer(classifier, accuracy)
    return scorer if channels == 1 else _FirstChannel(classifier, accuracy)


@dataclass(frozen=True)
class _FirstChannel(SampleScorer):
    """A :class:`SampleScorer` of multi-channel grey images: scores their first channel."""

    def __call__(self, images: Float[Tensor, "n c hh ww"], labels: Int[Tensor, "n"]) -> dict[str, float]:
        return SampleScorer.__call__(self, images[:, :1], labels)
