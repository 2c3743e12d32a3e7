"""The built-in digits' sample scorer: real digits score high, mirrored digits and noise low; bad input is refused."""

from __future__ import annotations

import pytest
import torch

from mdtblocks.data import DigitsDataset
from mdtblocks.evaluation.sample_score import digits_scorer


@pytest.fixture(scope="module")
def scorer():
    return digits_scorer(16)


def _digits(start: int, stop: int, flip: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    data = DigitsDataset(16, flip=flip)
    offset = len(data) // 2 if flip else 0  # the mirrored copies follow the originals
    items = [data[offset + i] for i in range(start, stop)]
    return torch.stack([x for x, _ in items]), torch.tensor([int(y) for _, y in items])


def test_real_digits_score_high_and_noise_and_mirrored_digits_low(scorer) -> None:
    images, labels = _digits(1500, 1797)  # the classifier's held-out digits
    accuracy = scorer(images, labels)["sample_class_accuracy"]
    assert accuracy == pytest.approx(scorer.held_out_accuracy) and accuracy > 0.9
    assert scorer(images, labels.roll(1))["sample_class_accuracy"] < 0.3  # wrong labels
    assert scorer(torch.rand_like(images) * 2 - 1, labels)["sample_class_accuracy"] < 0.3
    mirrored, mirrored_labels = _digits(1500, 1797, flip=True)
    assert scorer(mirrored, mirrored_labels)["sample_class_accuracy"] < 0.7  # a mirrored digit is not the digit


def test_bad_shapes_are_refused(scorer) -> None:
    # Under the tests' shape-checking hook the annotation refuses them first (a TypeError); without it, the ValueError.
    with pytest.raises((ValueError, TypeError), match=r"(need \(n, c, h, w\) images)|(Type-check error)"):
        scorer(torch.zeros(4, 16, 16), torch.zeros(4, dtype=torch.long))
    with pytest.raises((ValueError, TypeError), match=r"(got \(4, 1, 16, 16\) and \(3,\))|(Type-check error)"):
        scorer(torch.zeros(4, 1, 16, 16), torch.zeros(3, dtype=torch.long))
