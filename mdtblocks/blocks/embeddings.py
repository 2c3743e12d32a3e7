"""Conditioning embeddings: sinusoidal timestep MLP and class labels with a null class."""

from __future__ import annotations

import math

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

__all__ = ["timestep_frequencies", "TimestepEmbedder", "LabelEmbedder", "ZeroNullLabelEmbedder"]


def timestep_frequencies(t: Float[Tensor, "b"] | Int[Tensor, "b"], dim: int, max_period: float = 10000.0) -> Float[Tensor, "b {dim}"]:
    """Sinusoidal features of (possibly fractional) timesteps, ``[cos | sin]`` halves.

    Frequencies span ``1 .. 1/max_period`` geometrically (GLIDE/DiT convention);
    an odd ``dim`` is padded with a zero column.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, emb.new_zeros(emb.shape[0], 1)], dim=-1)
    return emb


class TimestepEmbedder(nn.Module):
    """Timestep -> ``d``-vector: sinusoidal features, then Linear-SiLU-Linear.

    Args:
        hidden_size: output width ``d``.
        frequency_size: number of sinusoidal features fed to the MLP (256 in DiT/MDT).
    """

    def __init__(self, hidden_size: int, frequency_size: int = 256) -> None:
        super().__init__()
        self.frequency_size = frequency_size
        self.mlp = nn.Sequential(
            nn.Linear(frequency_size, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size)
        )

    def forward(self, t: Float[Tensor, "b"] | Int[Tensor, "b"]) -> Float[Tensor, "b d"]:
        """Embed timesteps ``t`` (diffusion step indices, any real value)."""
        return self.mlp(timestep_frequencies(t, self.frequency_size).to(self.mlp[0].weight.dtype))

    def reset_parameters(self) -> None:
        """N(0, 0.02) MLP weights, zero biases (DiT init)."""
        for layer in (self.mlp[0], self.mlp[2]):
            nn.init.normal_(layer.weight, std=0.02)
            nn.init.zeros_(layer.bias)


class LabelEmbedder(nn.Module):
    """Class label -> ``d``-vector, with an extra null class ``num_classes`` for guidance.

    The embedder only embeds: which labels become the null class in training is drawn by
    the criterion (:class:`~mdtblocks.criterion.labels.LabelDropout`), from the step's
    generator, so training is reproducible and resumable bit for bit.

    Args:
        num_classes: number of real classes; labels live in ``[0, num_classes)``.
        hidden_size: output width ``d``.
        has_null: give the table a row for the null class ``num_classes`` (the official
            models have one iff their ``class_dropout_prob > 0``).
    """

    def __init__(self, num_classes: int, hidden_size: int, has_null: bool = True) -> None:
        super().__init__()
        if not isinstance(has_null, bool):
            raise TypeError(
                f"has_null must be a bool, got {has_null!r} (label dropout is the criterion's LabelDropout; "
                "a model with class_dropout_prob p has a null row iff p > 0)"
            )
        self.num_classes = num_classes
        self.has_null = has_null
        self.embedding_table = nn.Embedding(num_classes + int(has_null), hidden_size)

    @property
    def null_class(self) -> int | None:
        """Index of the unconditional label, or ``None`` if the table has no such row."""
        return self.num_classes if self.has_null else None

    def forward(self, labels: Int[Tensor, "b"]) -> Float[Tensor, "b d"]:
        """Look up the embedding of each label (the null class included)."""
        return self.embedding_table(labels)

    def reset_parameters(self) -> None:
        """N(0, 0.02) table (DiT init)."""
        nn.init.normal_(self.embedding_table.weight, std=0.02)


class ZeroNullLabelEmbedder(LabelEmbedder):
    """Class label -> ``d``-vector whose null class embeds to zero (a linear map of one-hot labels).

    MaskDiT (after EDM) embeds labels as ``Linear(one_hot(y))`` without bias and drops a
    label by zeroing its one-hot vector, so the unconditional embedding is the zero
    vector and has no parameters. Here label ``num_classes`` is that null class; the
    table has ``num_classes`` rows (the transposed official weight), and the null class
    always exists (guidance needs it even when training never drops).

    Args:
        num_classes: number of real classes; labels live in ``[0, num_classes]``.
        hidden_size: output width ``d``.
    """

    def __init__(self, num_classes: int, hidden_size: int) -> None:
        super().__init__(num_classes, hidden_size, has_null=True)
        self.embedding_table = nn.Embedding(num_classes, hidden_size)

    def forward(self, labels: Int[Tensor, "b"]) -> Float[Tensor, "b d"]:
        """The table row of each real label; zeros for the null class ``num_classes``."""
        real = labels < self.num_classes
        rows = self.embedding_table(torch.where(real, labels, torch.zeros_like(labels)))
        return rows * real.unsqueeze(-1).to(rows.dtype)
