"""The domain classifier and the domain metrics: training, saving, Frechet distance, accuracy, copy check."""

from __future__ import annotations

import pytest
import torch

from mdtblocks.data import DigitsDataset
from mdtblocks.evaluation import (
    DomainReference,
    domain_metrics,
    load_classifier,
    nearest_distances,
    save_classifier,
    train_classifier,
)


@pytest.fixture(scope="module")
def digits():
    ds = DigitsDataset(image_size=8, flip=False)
    return ds.images[:1400], ds.labels[:1400], ds.images[1400:], ds.labels[1400:]


@pytest.fixture(scope="module")
def classifier(digits):
    images, labels, _, _ = digits
    dataset = torch.utils.data.TensorDataset(images, labels)
    return train_classifier(dataset, num_classes=10, epochs=3, seed=0, shift=1)


def test_classifier_learns_and_is_seeded(digits, classifier) -> None:
    _, _, held_images, held_labels = digits
    accuracy = float((classifier.predict(held_images) == held_labels).float().mean())
    assert accuracy > 0.8, accuracy  # chance is 0.1
    images, labels, _, _ = digits
    again = train_classifier(torch.utils.data.TensorDataset(images[:64], labels[:64]), num_classes=10, epochs=1, seed=3)
    twice = train_classifier(torch.utils.data.TensorDataset(images[:64], labels[:64]), num_classes=10, epochs=1, seed=3)
    other = train_classifier(torch.utils.data.TensorDataset(images[:64], labels[:64]), num_classes=10, epochs=1, seed=4)
    for a, b in zip(again.state_dict().values(), twice.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(again.head.weight, other.head.weight)


def test_classifier_round_trips_through_safetensors(tmp_path, digits, classifier) -> None:
    save_classifier(classifier, tmp_path / "clf")
    loaded = load_classifier(tmp_path / "clf")
    x = digits[2][:16]
    torch.testing.assert_close(loaded(x), classifier(x), rtol=0, atol=0)
    with pytest.raises(FileNotFoundError, match="classifier.json does not exist"):
        load_classifier(tmp_path)


def test_nearest_distances_find_copies_and_known_distances() -> None:
    pool = torch.zeros(3, 1, 2, 2)
    pool[1] += 1.0
    pool[2] -= 1.0
    queries = torch.stack([pool[1], torch.full((1, 2, 2), 0.25), torch.full((1, 2, 2), -0.75)])
    torch.testing.assert_close(nearest_distances(queries, pool), torch.tensor([0.0, 0.25, 0.25]))
    with pytest.raises(ValueError, match="different image shapes"):
        nearest_distances(torch.zeros(1, 1, 3, 3), pool)


def test_domain_metrics_rank_real_copied_and_noise(digits, classifier) -> None:
    images, labels, held_images, held_labels = digits
    ref = DomainReference.build(classifier, images, held_images[:200])
    real = domain_metrics(ref, held_images[:200], held_labels[:200])
    copies = domain_metrics(ref, images[:200], labels[:200])
    noise = domain_metrics(ref, torch.rand(200, 1, 8, 8) * 2 - 1, held_labels[:200])
    wrong = domain_metrics(ref, held_images[:200], (held_labels[:200] + 1) % 10)
    assert real["fd"] < noise["fd"] and real["accuracy"] > 0.8 > 0.3 > noise["accuracy"]
    assert wrong["accuracy"] < 0.2 and wrong["fd"] == pytest.approx(real["fd"])  # the labels only enter accuracy
    assert real["nn_ratio"] == pytest.approx(1.0) and real["copy_fraction"] < 0.05
    assert copies["nn_distance"] == 0.0 and copies["copy_fraction"] == 1.0 and copies["nn_ratio"] == 0.0
    assert ref.holdout_fd == pytest.approx(real["fd"])
    with pytest.raises(ValueError, match=r"samples must be \(n, c, h, w\) with \(n,\) labels"):
        domain_metrics(ref, held_images[:10], held_labels[:9])
