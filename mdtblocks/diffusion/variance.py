"""The reverse-step variance: learned (range or raw), or fixed to the large or small bound."""

from __future__ import annotations

from jaxtyping import Float
from torch import Tensor

__all__ = ["VARIANCE_TYPES", "check_variance_type", "learns_variance", "split_model_output", "interpolate_log_variance"]

VARIANCE_TYPES: tuple[str, ...] = ("learned_range", "learned", "fixed_large", "fixed_small")
"""Variance types.

- ``learned_range``: the model outputs ``v`` in ``[-1, 1]`` per element; the log-variance
  interpolates between the posterior variance (``v = -1``) and beta (``v = 1``)
  (Nichol & Dhariwal 2021, Eq. 15). Default when sigma is learned.
- ``learned``: the model outputs the log-variance itself.
- ``fixed_large``: beta (with the first step set to the posterior variance). Default otherwise.
- ``fixed_small``: the posterior variance.
"""


def check_variance_type(variance_type: str) -> str:
    """Validate a variance type name.

    Args:
        variance_type: one of :data:`VARIANCE_TYPES`.

    Returns:
        The name.

    Raises:
        ValueError: for anything else.
    """
    if variance_type not in VARIANCE_TYPES:
        raise ValueError(f"unknown variance type {variance_type!r}; expected one of {VARIANCE_TYPES}")
    return variance_type


def learns_variance(variance_type: str) -> bool:
    """Whether the model output carries variance channels for this variance type.

    Args:
        variance_type: one of :data:`VARIANCE_TYPES`.

    Returns:
        ``True`` for ``learned_range`` and ``learned``.
    """
    return variance_type in ("learned_range", "learned")


def split_model_output(
    output: Float[Tensor, "b c2 hh ww"], channels: int, variance_type: str
) -> tuple[Float[Tensor, "b c hh ww"], Float[Tensor, "b c hh ww"] | None]:
    """Split a model output into its prediction and (when learned) variance channels.

    Args:
        output: the raw model output.
        channels: channels ``c`` of the diffused data.
        variance_type: one of :data:`VARIANCE_TYPES`.

    Returns:
        The ``c``-channel prediction and the ``c``-channel variance values, or ``None``
        for a fixed variance.

    Raises:
        ValueError: if the output does not have ``2c`` (learned) or ``c`` (fixed) channels.
    """
    learned = learns_variance(variance_type)
    expected = 2 * channels if learned else channels
    if output.ndim < 2 or output.shape[1] != expected:
        got = output.shape[1] if output.ndim >= 2 else None
        allowed = "; ".join(
            f"{name!r} needs {2 * channels if learns_variance(name) else channels}" for name in VARIANCE_TYPES
        )
        raise ValueError(
            f"model output has {got} channels (shape {tuple(output.shape)}) but variance type {variance_type!r} "
            f"needs {expected} for {channels}-channel data ({allowed}); build the diffusion with "
            f"learn_sigma={not learned} or the model with learn_sigma={learned}"
        )
    if not learned:
        return output, None
    return output[:, :channels], output[:, channels:]


def interpolate_log_variance(
    values: Float[Tensor, "b c hh ww"], min_log: Float[Tensor, "b 1 1 1"], max_log: Float[Tensor, "b 1 1 1"]
) -> Float[Tensor, "b c hh ww"]:
    """Learned-range log-variance: ``frac max_log + (1 - frac) min_log`` with ``frac = (v + 1) / 2``.

    Args:
        values: the model's variance channels, nominally in ``[-1, 1]``.
        min_log: log of the posterior variance (clipped at step 0).
        max_log: log of beta.

    Returns:
        The log-variance per element.
    """
    frac = (values + 1) / 2
    return frac * max_log + (1 - frac) * min_log
