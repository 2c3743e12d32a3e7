"""Timestep respacing: sample with a subset of the training steps (``"250"``, ``"ddim50"``, ``"10,15,20"``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

__all__ = ["space_timesteps", "respace_betas"]

_FORMS = "'' (all steps), 'N', 'N1,N2,...' (N per equal section) or 'ddimN' (the DDIM paper's fixed stride)"


def space_timesteps(num_timesteps: int, section_counts: str | Sequence[int]) -> list[int]:
    """Steps of a ``num_timesteps`` process to keep, exactly as the official ``space_timesteps``.

    The process is cut into ``len(section_counts)`` equal sections (the first
    ``num_timesteps % len(section_counts)`` one step longer) and section ``i`` is
    strided to ``section_counts[i]`` steps, rounding fractional strides, so a single
    section of ``N >= 2`` steps keeps both ``0`` and ``num_timesteps - 1``.
    ``"ddimN"`` instead takes ``range(0, num_timesteps, stride)`` with the integer
    stride that gives exactly ``N`` steps (DDIM, Song et al. 2021).

    Args:
        num_timesteps: steps of the original process.
        section_counts: ``"250"``, ``"10,15,20"``, ``"ddim50"`` or a sequence of counts.

    Returns:
        The kept steps, sorted ascending, without duplicates.

    Raises:
        ValueError: for a malformed string or counts that do not fit the process.
    """
    if isinstance(section_counts, str):
        text = section_counts.strip()
        if text.startswith("ddim"):
            desired = _parse_int(text[len("ddim") :], section_counts)
            for stride in range(1, num_timesteps):
                if len(range(0, num_timesteps, stride)) == desired:
                    return list(range(0, num_timesteps, stride))
            raise ValueError(
                f"timestep respacing {section_counts!r}: no integer stride gives exactly {desired} of "
                f"{num_timesteps} steps"
            )
        counts = [_parse_int(part, section_counts) for part in text.split(",")]
    else:
        counts = [int(c) for c in section_counts]
        if not counts:
            raise ValueError(f"timestep respacing needs at least one section count, got {section_counts!r}")
    # A section may be skipped with a count of 0 (the official code accepts it), but
    # at least one step must remain.
    if any(c < 0 for c in counts) or sum(counts) == 0:
        raise ValueError(
            f"timestep respacing {section_counts!r}: section counts must be non-negative with a positive sum, got {counts}"
        )
    size_per, extra = divmod(num_timesteps, len(counts))
    start, steps = 0, []
    for i, count in enumerate(counts):
        size = size_per + (1 if i < extra else 0)
        if size < count:
            raise ValueError(
                f"timestep respacing {section_counts!r}: cannot take {count} steps from a section of {size} "
                f"(the process has {num_timesteps} steps)"
            )
        stride = 1.0 if count <= 1 else (size - 1) / (count - 1)
        # Accumulate the fractional stride and round each position, as the official code does.
        pos = 0.0
        for _ in range(count):
            steps.append(start + round(pos))
            pos += stride
        start += size
    return sorted(set(steps))


def respace_betas(
    alphas_cumprod: Float[Tensor, "T"], use_timesteps: Sequence[int]
) -> tuple[Float[Tensor, "S"], Int[Tensor, "S"]]:
    """Betas of the shorter process that visits only ``use_timesteps``.

    Step ``j`` of the new process jumps from kept step ``s_{j-1}`` to ``s_j``, so its
    beta is ``1 - alpha_bar[s_j] / alpha_bar[s_{j-1}]``: the respaced process has the
    same marginals ``q(x_t | x_0)`` at every kept step.

    Args:
        alphas_cumprod: ``(T,)`` cumulative alphas of the original process.
        use_timesteps: steps to keep (any order; duplicates ignored).

    Returns:
        The ``(S,)`` float64 betas and the ``(S,)`` int64 map from new to original steps.

    Raises:
        ValueError: for steps outside ``[0, T)`` or an empty selection.
    """
    total = alphas_cumprod.shape[0]
    kept = sorted(set(int(s) for s in use_timesteps))
    if not kept:
        raise ValueError("use_timesteps is empty; keep at least one step")
    if kept[0] < 0 or kept[-1] >= total:
        raise ValueError(f"use_timesteps span [{kept[0]}, {kept[-1]}], expected steps in [0, {total})")
    ab = alphas_cumprod.to(torch.float64)
    index = torch.tensor(kept, dtype=torch.int64)
    kept_ab = ab[index]
    prev_ab = torch.cat([torch.ones(1, dtype=torch.float64), kept_ab[:-1]])
    return 1.0 - kept_ab / prev_ab, index


def _parse_int(text: str, whole: object) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"unknown timestep respacing {whole!r}; expected {_FORMS}") from None
