"""Moved: ``MaskedDiffusionObjective`` is in :mod:`mdtblocks.criterion`, ``StepRandomness`` in :mod:`mdtblocks.criterion.draws`.

The names still resolve here (looked up on first use, so the Gaussian math below the
criterion does not import it).
"""

from __future__ import annotations

from typing import Any

__all__: list[str] = []  # the names below are the criterion's; documented there


def __getattr__(name: str) -> Any:
    """``MaskedDiffusionObjective`` and ``StepRandomness`` from :mod:`mdtblocks.criterion`, on first use."""
    if name in ("MaskedDiffusionObjective", "StepRandomness"):
        from .. import criterion

        return getattr(criterion, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
