"""A small CNN digit classifier: the domain feature network for small images (Inception says little at 32 px)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.utils.data import Dataset

from ..io import atomic_write, read_json, write_json

__all__ = ["ClassifierConfig", "DomainClassifier", "train_classifier", "save_classifier", "load_classifier"]

WEIGHTS = "classifier.safetensors"
CONFIG = "classifier.json"


@dataclass(frozen=True)
class ClassifierConfig:
    """Sizes of a :class:`DomainClassifier`.

    Attributes:
        in_channels: image channels.
        num_classes: classes.
        width: channels of the first convolution (doubled twice); the feature size is ``4 * width``.
    """

    in_channels: int = 1
    num_classes: int = 10
    width: int = 16

    def __post_init__(self) -> None:
        for name in ("in_channels", "num_classes", "width"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")


class DomainClassifier(nn.Module):
    """Three conv stages (conv-GroupNorm-GELU twice, then 2x pooling), global average pooling, a linear head.

    :meth:`features` is the penultimate layer (``4 * width`` values): the space the
    domain Frechet distance is measured in. Inputs are images in [-1, 1] of any size
    of at least 8 pixels.
    """

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        self.config = config
        c, w = config.in_channels, config.width
        stages: list[nn.Module] = []
        for i, out in enumerate((w, 2 * w, 4 * w)):
            stages += [
                nn.Conv2d(c, out, 3, padding=1), nn.GroupNorm(8 if out % 8 == 0 else 1, out), nn.GELU(),
                nn.Conv2d(out, out, 3, padding=1), nn.GroupNorm(8 if out % 8 == 0 else 1, out), nn.GELU(),
            ]
            if i < 2:
                stages.append(nn.MaxPool2d(2))
            c = out
        self.body = nn.Sequential(*stages)
        self.head = nn.Linear(4 * w, config.num_classes)

    def _check(self, images: Tensor) -> None:
        if images.ndim != 4 or images.shape[1] != self.config.in_channels:
            raise ValueError(
                f"images must be (b, {self.config.in_channels}, h, w), got shape {tuple(images.shape)}"
            )

    def features(self, images: Float[Tensor, "b c hh ww"]) -> Float[Tensor, "b f"]:
        """Penultimate features (after global average pooling).

        Args:
            images: ``(b, c, hh, ww)`` in [-1, 1].

        Returns:
            ``(b, 4 * width)`` features.
        """
        self._check(images)
        return self.body(images).mean(dim=(2, 3))

    def forward(self, images: Float[Tensor, "b c hh ww"]) -> Float[Tensor, "b k"]:
        """Class logits.

        Args:
            images: ``(b, c, hh, ww)`` in [-1, 1].

        Returns:
            ``(b, num_classes)`` logits.
        """
        return self.head(self.features(images))

    @torch.no_grad()
    def predict(self, images: Float[Tensor, "b c hh ww"], batch_size: int = 500) -> Int[Tensor, "b"]:
        """Predicted classes, in eval mode and batches."""
        was_training = self.training
        self.eval()
        out = torch.cat([self(part).argmax(dim=1) for part in images.split(batch_size)])
        self.train(was_training)
        return out

    @torch.no_grad()
    def embed(self, images: Float[Tensor, "b c hh ww"], batch_size: int = 500) -> Float[Tensor, "b f"]:
        """:meth:`features` in eval mode and batches, on the model's device."""
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        out = torch.cat([self.features(part.to(device)).cpu() for part in images.split(batch_size)])
        self.train(was_training)
        return out


def _stack(dataset: Dataset) -> tuple[Tensor, Tensor]:
    images = getattr(dataset, "images", None)
    labels = getattr(dataset, "labels", None)
    if isinstance(images, Tensor) and isinstance(labels, Tensor) and not getattr(dataset, "flip", False):
        return images, labels
    pairs = [dataset[i] for i in range(len(dataset))]  # type: ignore[arg-type]
    return torch.stack([p[0] for p in pairs]), torch.tensor([p[1] for p in pairs])


def train_classifier(
    dataset: Dataset,
    *,
    num_classes: int | None = None,
    epochs: int = 4,
    batch_size: int = 64,
    lr: float = 2e-3,
    width: int = 16,
    seed: int = 0,
    shift: int = 2,
) -> DomainClassifier:
    """Train a :class:`DomainClassifier` on ``(image, label)`` pairs, deterministically for a given ``seed``.

    AdamW with a cosine learning-rate decay; each batch is shifted by up to ``shift``
    pixels (random translation), which makes the features less sensitive to where a
    generated digit sits. On the 4,500 MNIST-5k training digits four epochs take
    about 15 seconds on 2 CPU cores and reach about 96% accuracy on the 500 held-out ones.

    Args:
        dataset: ``(image in [-1, 1], label)`` pairs.
        num_classes: classes; none: ``dataset.num_classes``.
        epochs: passes over the data.
        batch_size: images per step.
        lr: peak learning rate.
        width: :class:`ClassifierConfig` width.
        seed: seed of the initial weights, the order and the shifts.
        shift: largest random translation in pixels (0: none).

    Returns:
        The trained classifier, in eval mode, on the CPU.
    """
    if epochs < 1 or batch_size < 1 or not lr > 0:
        raise ValueError(f"epochs and batch_size must be positive and lr > 0, got {epochs}, {batch_size}, {lr}")
    images, labels = _stack(dataset)
    if len(images) == 0:
        raise ValueError("cannot train a classifier on an empty dataset")
    classes = num_classes if num_classes is not None else int(getattr(dataset, "num_classes", int(labels.max()) + 1))
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DomainClassifier(ClassifierConfig(images.shape[1], classes, width))
    steps = epochs * -(-len(images) // batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.15)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=generator)
        for idx in order.split(batch_size):
            x = images[idx]
            if shift:
                dx, dy = torch.randint(-shift, shift + 1, (2,), generator=generator).tolist()
                x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
            loss = F.cross_entropy(model(x), labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    return model.eval()


def save_classifier(model: DomainClassifier, directory: str | os.PathLike) -> Path:
    """Write ``classifier.json`` and ``classifier.safetensors`` into ``directory`` (atomically)."""
    directory = Path(directory)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(directory / WEIGHTS, lambda p: save_file(state, str(p)))
    write_json(directory / CONFIG, asdict(model.config))
    return directory


def load_classifier(directory: str | os.PathLike) -> DomainClassifier:
    """Load a classifier that :func:`save_classifier` wrote (safetensors: no pickled code runs)."""
    directory = Path(directory)
    for name in (CONFIG, WEIGHTS):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory / name} does not exist; expected a folder written by save_classifier")
    config = ClassifierConfig(**read_json(directory / CONFIG))
    model = DomainClassifier(config)
    model.load_state_dict(load_file(str(directory / WEIGHTS)))
    return model.eval()
