"""Reading learning curves: when a model first reaches a quality level, and how two models compare."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Curve", "ReachTable", "first_reach", "mean_curve", "mean_flops", "reach_table", "spread"]


@dataclass(frozen=True)
class Curve:
    """One metric of one training run at its evaluated steps.

    Attributes:
        steps: evaluated optimizer steps, increasing.
        seconds: training seconds at each evaluated step (wall-clock or CPU; evaluation excluded).
        values: the metric at each step.
        flops: training multiply-adds at each evaluated step (forward and backward), or
            empty when not counted.
    """

    steps: tuple[int | float, ...]
    seconds: tuple[int | float, ...]
    values: tuple[int | float, ...]
    flops: tuple[int | float, ...] = ()

    def __post_init__(self) -> None:
        if not (len(self.steps) == len(self.seconds) == len(self.values)) or len(self.flops) not in (0, len(self.steps)):
            raise ValueError(
                f"steps, seconds, values (and flops, if given) must have one entry per evaluation, got "
                f"{len(self.steps)}, {len(self.seconds)}, {len(self.values)} and {len(self.flops)}"
            )
        if any(b <= a for a, b in zip(self.steps, self.steps[1:])):
            raise ValueError(f"steps must increase, got {self.steps}")


def first_reach(
    xs: Sequence[int | float], values: Sequence[int | float], level: float, lower_is_better: bool
) -> float | None:
    """The first ``x`` at which a piecewise-linear curve reaches ``level``; ``None`` if it never does.

    Between two evaluations the curve is interpolated linearly, so a crossing between
    steps 400 and 600 is placed where the line through them meets ``level``. A curve
    already at ``level`` at its first point returns that point's ``x`` (the true
    crossing may be earlier: the study cannot tell).

    Args:
        xs: increasing positions (steps or seconds).
        values: the metric at each position.
        level: the quality level.
        lower_is_better: ``True`` for distances (reach = at or below), ``False`` for accuracies.
    """
    if len(xs) != len(values):
        raise ValueError(f"xs and values differ in length: {len(xs)} and {len(values)}")
    sign = 1.0 if lower_is_better else -1.0
    gap = [sign * (v - level) for v in values]  # <= 0 means reached
    for i, g in enumerate(gap):
        if g <= 0:
            if i == 0:
                return float(xs[0])
            g0 = gap[i - 1]
            frac = g0 / (g0 - g) if g0 != g else 1.0
            return float(xs[i - 1] + frac * (xs[i] - xs[i - 1]))
    return None


def mean_curve(curves: Sequence[Curve]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The mean and band over runs of one model (its seeds), on the steps all of them reached.

    Returns:
        ``(steps, seconds, mean, low, high)``: the evaluated steps, the mean training
        seconds at each, and the mean, minimum and maximum of the values over runs.
    """
    if not curves:
        raise ValueError("need at least one curve")
    k = min(len(c.steps) for c in curves)
    steps = curves[0].steps[:k]
    if any(c.steps[:k] != steps for c in curves):
        raise ValueError("the runs were evaluated at different steps")
    values = np.array([c.values[:k] for c in curves], dtype=np.float64)
    seconds = np.array([c.seconds[:k] for c in curves], dtype=np.float64).mean(axis=0)
    return np.asarray(steps, dtype=np.float64), seconds, values.mean(axis=0), values.min(axis=0), values.max(axis=0)


@dataclass(frozen=True)
class ReachTable:
    """Steps, seconds and FLOPs each run needs to reach one level of one metric.

    Attributes:
        metric: the metric's name.
        level: the quality level.
        steps: ``{model: [steps per seed, None where not reached]}``.
        seconds: the same in training seconds.
        flops: the same in training multiply-adds (``None`` also where a curve has no FLOPs).
    """

    metric: str
    level: float
    steps: dict[str, list[float | None]]
    seconds: dict[str, list[float | None]]
    flops: dict[str, list[float | None]] = field(default_factory=dict)

    def ratios(self, model: str, baseline: str, by: str = "steps") -> list[float]:
        """``model / baseline`` per seed where both reached the level (seeds paired by position).

        Args:
            by: ``"steps"``, ``"seconds"`` or ``"flops"``.
        """
        if by not in ("steps", "seconds", "flops"):
            raise ValueError(f"by must be 'steps', 'seconds' or 'flops', got {by!r}")
        table = {"steps": self.steps, "seconds": self.seconds, "flops": self.flops}[by]
        pairs = zip(table.get(model, []), table.get(baseline, []))
        return [a / b for a, b in pairs if a is not None and b is not None and b > 0]


def reach_table(
    curves: dict[str, list[Curve]], metric: str, level: float, lower_is_better: bool
) -> ReachTable:
    """Where every run of every model first reaches ``level`` (see :func:`first_reach`)."""
    steps: dict[str, list[float | None]] = {}
    seconds: dict[str, list[float | None]] = {}
    flops: dict[str, list[float | None]] = {}
    for model, runs in curves.items():
        steps[model] = [first_reach(c.steps, c.values, level, lower_is_better) for c in runs]
        seconds[model] = [first_reach(c.seconds, c.values, level, lower_is_better) for c in runs]
        flops[model] = [first_reach(c.flops, c.values, level, lower_is_better) if c.flops else None for c in runs]
    return ReachTable(metric, level, steps, seconds, flops)


def mean_flops(curves: Sequence[Curve]) -> np.ndarray | None:
    """The mean training FLOPs over runs at the steps :func:`mean_curve` returns; ``None`` if a run has none."""
    if not curves or any(not c.flops for c in curves):
        return None
    k = min(len(c.steps) for c in curves)
    return np.array([c.flops[:k] for c in curves], dtype=np.float64).mean(axis=0)


def spread(values: Sequence[int | float | None], digits: int = 2) -> str:
    """``mean (min-max, n seeds)`` of the finite values of a list, or ``n/a`` when there are none.

    Args:
        values: one value per seed; ``None`` entries (not reached) are left out.
        digits: decimals shown.
    """
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return "n/a"
    mean = sum(finite) / len(finite)
    if len(finite) == 1:
        return f"{mean:.{digits}f} (1 seed)"
    return f"{mean:.{digits}f} ({min(finite):.{digits}f}-{max(finite):.{digits}f}, {len(finite)} seeds)"
