"""The learning-speed figure: each metric against training steps, wall-clock time and (when counted) FLOPs."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..io import atomic_write
from .learning_speed import Curve, mean_curve, mean_flops

__all__ = ["plot_learning_curves"]


def curve_styles(models: list[str], colors: Sequence[Any]) -> dict[str, dict[str, Any]]:
    """One line style per model (``color``, ``ls``, ``marker`` keywords of ``plot``): the colours in turn, then the
    same colours dashed with squares and dotted with triangles, so that up to three times as many models as colours
    stay apart."""
    return {
        model: {"color": colors[i % len(colors)], "ls": ("-", "--", ":")[i // len(colors) % 3],
                "marker": "os^"[i // len(colors) % 3]}
        for i, model in enumerate(models)
    }


def plot_learning_curves(
    curves: dict[str, dict[str, list[Curve]]],
    path: str | os.PathLike,
    labels: dict[str, str] | None = None,
    title: str = "",
    floors: dict[str, float] | None = None,
) -> Path:
    """Plot ``curves[metric][model]`` (one :class:`Curve` per seed) as mean lines with min-max bands.

    The top row puts training steps on the x axis, the second training seconds and,
    when every curve counts them, the third training FLOPs (multiply-adds); one column
    per metric. Needs matplotlib (``pip install matplotlib``); the PNG is written
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
    with_flops = all(mean_flops(runs) is not None for by_model in curves.values() for runs in by_model.values())
    rows = 3 if with_flops else 2
    fig, axes = plt.subplots(rows, len(metrics), figsize=(4.2 * len(metrics), 3.2 * rows), squeeze=False)
    names = ("training steps", "training seconds", "training FLOPs (multiply-adds)")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    styles = curve_styles(sorted({model for by_model in curves.values() for model in by_model}), colors)
    for col, metric in enumerate(metrics):
        for model, runs in sorted(curves[metric].items()):
            steps, seconds, mean, low, high = mean_curve(runs)
            axes_x = (steps, seconds, mean_flops(runs)) if with_flops else (steps, seconds)
            for row, xs in enumerate(axes_x):
                ax = axes[row][col]
                ax.plot(xs, mean, ms=3, label=f"{model} ({len(runs)} seeds)", **styles[model])
                if len(runs) > 1:
                    ax.fill_between(xs, low, high, color=styles[model]["color"], alpha=0.2, lw=0)
        for row in range(rows):
            ax = axes[row][col]
            if floors and metric in floors:
                ax.axhline(floors[metric], color="grey", ls="--", lw=1, label="held-out real digits")
            ax.set_ylabel((labels or {}).get(metric, metric))
            ax.set_xlabel(names[row])
            ax.grid(alpha=0.3)
        axes[0][col].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return atomic_write(path, lambda p: p.write_bytes(buffer.getvalue()))
