"""What the network predicts (epsilon, x0 or v) and the exact conversions between them.

With ``x_t = a x0 + s eps``, ``a = sqrt(alpha_bar)``, ``s = sqrt(1 - alpha_bar)``
(so ``a^2 + s^2 = 1``) and ``v = a eps - s x0`` (Salimans & Ho 2022), any one of
the three predictions determines the other two given ``x_t``.
"""

from __future__ import annotations

from jaxtyping import Float
from torch import Tensor

__all__ = [
    "PREDICTIONS",
    "check_prediction",
    "xstart_from_eps",
    "eps_from_xstart",
    "xstart_from_v",
    "eps_from_v",
    "v_from_xstart_eps",
    "to_xstart",
]

PREDICTIONS: tuple[str, ...] = ("epsilon", "x0", "v")
"""Canonical prediction names. Aliases: ``eps``; ``x_start``, ``xstart``, ``sample``; ``velocity``, ``v_prediction``."""

_ALIASES = {
    "eps": "epsilon",
    "x_start": "x0",
    "xstart": "x0",
    "start_x": "x0",
    "sample": "x0",
    "velocity": "v",
    "v_prediction": "v",
}

Coef = Float[Tensor, "b 1 1 1"]


def check_prediction(predict: str) -> str:
    """Canonical name of a prediction type.

    Args:
        predict: one of :data:`PREDICTIONS` or an alias.

    Returns:
        ``"epsilon"``, ``"x0"`` or ``"v"``.

    Raises:
        ValueError: for anything else.
    """
    name = _ALIASES.get(predict, predict) if isinstance(predict, str) else predict
    if name not in PREDICTIONS:
        raise ValueError(f"unknown prediction {predict!r}; expected one of {PREDICTIONS}")
    return name


def xstart_from_eps(
    x_t: Float[Tensor, "b c hh ww"], eps: Float[Tensor, "b c hh ww"], a: Coef, s: Coef
) -> Float[Tensor, "b c hh ww"]:
    """``x0 = (x_t - s eps) / a``.

    Args:
        x_t: noisy input.
        eps: (predicted) noise.
        a: ``sqrt(alpha_bar_t)`` per sample.
        s: ``sqrt(1 - alpha_bar_t)`` per sample.

    Returns:
        The clean-data estimate.
    """
    return (x_t - s * eps) / a


def eps_from_xstart(
    x_t: Float[Tensor, "b c hh ww"], x0: Float[Tensor, "b c hh ww"], a: Coef, s: Coef
) -> Float[Tensor, "b c hh ww"]:
    """``eps = (x_t - a x0) / s``.

    Args:
        x_t: noisy input.
        x0: (predicted) clean data.
        a: ``sqrt(alpha_bar_t)`` per sample.
        s: ``sqrt(1 - alpha_bar_t)`` per sample.

    Returns:
        The noise estimate.
    """
    return (x_t - a * x0) / s


def xstart_from_v(
    x_t: Float[Tensor, "b c hh ww"], v: Float[Tensor, "b c hh ww"], a: Coef, s: Coef
) -> Float[Tensor, "b c hh ww"]:
    """``x0 = a x_t - s v``.

    Args:
        x_t: noisy input.
        v: (predicted) velocity.
        a: ``sqrt(alpha_bar_t)`` per sample.
        s: ``sqrt(1 - alpha_bar_t)`` per sample.

    Returns:
        The clean-data estimate.
    """
    return a * x_t - s * v


def eps_from_v(
    x_t: Float[Tensor, "b c hh ww"], v: Float[Tensor, "b c hh ww"], a: Coef, s: Coef
) -> Float[Tensor, "b c hh ww"]:
    """``eps = s x_t + a v``.

    Args:
        x_t: noisy input.
        v: (predicted) velocity.
        a: ``sqrt(alpha_bar_t)`` per sample.
        s: ``sqrt(1 - alpha_bar_t)`` per sample.

    Returns:
        The noise estimate.
    """
    return s * x_t + a * v


def v_from_xstart_eps(
    x0: Float[Tensor, "b c hh ww"], eps: Float[Tensor, "b c hh ww"], a: Coef, s: Coef
) -> Float[Tensor, "b c hh ww"]:
    """``v = a eps - s x0``, the v-prediction target.

    Args:
        x0: clean data.
        eps: noise.
        a: ``sqrt(alpha_bar_t)`` per sample.
        s: ``sqrt(1 - alpha_bar_t)`` per sample.

    Returns:
        The velocity.
    """
    return a * eps - s * x0


def to_xstart(
    predict: str, x_t: Float[Tensor, "b c hh ww"], out: Float[Tensor, "b c hh ww"], a: Coef, s: Coef
) -> Float[Tensor, "b c hh ww"]:
    """Clean-data estimate from a model output of the given prediction type.

    Args:
        predict: ``"epsilon"``, ``"x0"`` or ``"v"`` (canonical names).
        x_t: noisy input.
        out: the model's prediction (mean part only).
        a: ``sqrt(alpha_bar_t)`` per sample.
        s: ``sqrt(1 - alpha_bar_t)`` per sample.

    Returns:
        The clean-data estimate.
    """
    if predict == "epsilon":
        return xstart_from_eps(x_t, out, a, s)
    if predict == "x0":
        return out
    if predict == "v":
        return xstart_from_v(x_t, out, a, s)
    raise ValueError(f"unknown prediction {predict!r}; expected one of {PREDICTIONS}")
