"""Shape vocabulary shared by every module.

Dimension names used in jaxtyping annotations throughout mdtblocks:

- ``b`` batch, ``c`` channels, ``hh``/``ww`` spatial height and width,
- ``n`` tokens of the full patch grid, ``k`` kept (unmasked) tokens,
- ``d`` model width, ``h`` attention heads, ``q``/``kv`` query and key lengths.
"""

from __future__ import annotations

from jaxtyping import Bool, Float, Int, Shaped
from torch import Tensor

__all__ = ["Tensor", "Float", "Int", "Bool", "Shaped", "Image", "Tokens", "Cond", "Timesteps", "Labels", "Indices"]

Image = Float[Tensor, "b c hh ww"]
"""A batch of images or latents, channels first."""
Tokens = Float[Tensor, "b n d"]
"""A batch of token sequences."""
Cond = Float[Tensor, "b d"]
"""The conditioning vector (timestep + label embedding) of each sample."""
Timesteps = Shaped[Tensor, "b"]
"""Diffusion timesteps, one per sample (integer or float valued)."""
Labels = Int[Tensor, "b"]
"""Class labels, one per sample."""
Indices = Int[Tensor, "b k"]
"""Token indices into the row-major patch grid, one row per sample."""
