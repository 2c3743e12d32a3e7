"""Classifier-free-guidance label dropout: the criterion's coin flips, the model's null-class embedding."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Bool, Int
from torch import Tensor

__all__ = ["LabelDropout"]


@dataclass(frozen=True)
class LabelDropout:
    """Each label becomes the null class with probability ``prob`` during training (DiT, MDT: 0.1).

    The model keeps only the null class's embedding row (``num_classes``); which labels
    drop is drawn here, from the step's generator.

    Attributes:
        prob: the drop probability in ``[0, 1)``; 0 draws nothing and drops nothing.
    """

    prob: float | int = 0.1

    def __post_init__(self) -> None:
        if isinstance(self.prob, bool) or not isinstance(self.prob, (int, float)) or not 0.0 <= self.prob < 1.0:
            raise ValueError(f"label dropout prob must be a number in [0, 1), got {self.prob!r}")
        if not math.isfinite(self.prob):
            raise ValueError(f"label dropout prob must be finite, got {self.prob!r}")

    @classmethod
    def of_model(cls, model: torch.nn.Module) -> LabelDropout:
        """The dropout a backbone's config records: its legacy ``class_dropout_prob`` field.

        Configs and official checkpoints carry ``class_dropout_prob`` (DiT, MDT: 0.1); it also
        decides whether the model has a null-class row (iff above 0). It is read here, as the
        record of the dropout the model was published (or a legacy run trained) with.

        Raises:
            TypeError: ``model`` has no config with ``class_dropout_prob`` (give ``LabelDropout(prob)``).
        """
        prob = getattr(getattr(model, "config", None), "class_dropout_prob", None)
        if prob is None:
            raise TypeError(
                f"{type(model).__name__} has no config recording class_dropout_prob; give LabelDropout(prob) explicitly"
            )
        return cls(float(prob))

    def draw(
        self, batch: int, generator: torch.Generator, device: torch.device | str | None = None
    ) -> Bool[Tensor, "b"]:
        """``batch`` coin flips on ``generator``'s device (none are drawn when ``prob`` is 0), moved to ``device``."""
        gen_device = generator.device
        if self.prob <= 0:
            return torch.zeros(batch, dtype=torch.bool, device=device or gen_device)
        flips = torch.rand(batch, generator=generator, device=gen_device)
        return (flips < self.prob).to(device or gen_device)

    @staticmethod
    def apply(y: Int[Tensor, "b"], drop: Bool[Tensor, "b"], null_class: int) -> Int[Tensor, "b"]:
        """``y`` with the dropped labels replaced by ``null_class``."""
        return torch.where(drop, null_class, y)

    def to_record(self) -> dict[str, Any]:
        """``{"prob": ...}``."""
        return {"prob": float(self.prob)}
