"""The learning-speed figure: each metric against training steps and against wall-clock time."""

from __future__ import annotations

import io
import os
from pathlib import Path

from ..io import atomic_write
from .learning_speed import Curve, mean_curve

__all__ = ["plot_learning_curves"]


def plot_learning_curves(
    curves: dict[str, dict[str, list[Curve]]],
    path: str | os.PathLike,
    labels: dict[str, str] | None = None,
    title: str = "",
    floors: dict[str, float] | None = None,
) -> Path:
    """Plot ``curves[metric][model]`` (one :class:`Curve` per seed) as mean lines with min-max bands.

    The top row puts training steps on the x axis, the bottom row training seconds; one
    column per metric. Needs matplotlib (``pip install matplotlib``); the PNG is written
    atomically.

    Args:
        curves: ``{metric: {model: [curve per seed]}}``.
        path: the ``.png`` to write.
        labels: axis label per metric (default: the metric's name).
        title: figure title.
        floors: a dashed reference line per metric (e.g. what held-out real data scores).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ModuleNotFoundError:
        raise ModuleNotFoundError("plotting needs matplotlib: pip install matplotlib") from None
    metrics = list(curves)
    fig, axes = plt.subplots(2, len(metrics), figsize=(4.2 * len(metrics), 6.4), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for col, metric in enumerate(metrics):
        for i, (model, runs) in enumerate(sorted(curves[metric].items())):
            steps, seconds, mean, low, high = mean_curve(runs)
            for row, xs in enumerate((steps, seconds)):
                ax = axes[row][col]
                ax.plot(xs, mean, marker="o", ms=3, color=colors[i % len(colors)], label=f"{model} ({len(runs)} seeds)")
                if len(runs) > 1:
                    ax.fill_between(xs, low, high, color=colors[i % len(colors)], alpha=0.2, lw=0)
        for row in range(2):
            ax = axes[row][col]
            if floors and metric in floors:
                ax.axhline(floors[metric], color="grey", ls="--", lw=1, label="held-out real digits")
            ax.set_ylabel((labels or {}).get(metric, metric))
            ax.set_xlabel("training steps" if row == 0 else "training seconds")
            ax.grid(alpha=0.3)
        axes[0][col].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return atomic_write(path, lambda p: p.write_bytes(buffer.getvalue()))
