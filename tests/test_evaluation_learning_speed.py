"""Reading learning curves: first crossing of a level, per-seed ratios, mean and band, the figure."""

from __future__ import annotations

import pytest

from mdtblocks.evaluation import Curve, first_reach, mean_curve, plot_learning_curves, reach_table, spread


def test_first_reach_interpolates_between_evaluations() -> None:
    steps, fd = [100, 200, 300], [10.0, 6.0, 2.0]
    assert first_reach(steps, fd, 6.0, lower_is_better=True) == 200
    assert first_reach(steps, fd, 4.0, lower_is_better=True) == 250
    assert first_reach(steps, fd, 11.0, lower_is_better=True) == 100  # already there at the first evaluation
    assert first_reach(steps, fd, 1.0, lower_is_better=True) is None
    assert first_reach(steps, [0.1, 0.5, 0.9], 0.7, lower_is_better=False) == 250
    assert first_reach(steps, [0.1, 0.5, 0.9], 0.95, lower_is_better=False) is None
    with pytest.raises(ValueError, match="differ in length: 3 and 2"):
        first_reach(steps, [1.0, 2.0], 1.0, True)


def test_reach_table_ratios_pair_seeds() -> None:
    curves = {
        "DiT": [Curve((100, 200), (10, 20), (8.0, 4.0)), Curve((100, 200), (10, 20), (8.0, 6.0))],
        "MDTv2": [Curve((100, 200), (30, 60), (4.0, 2.0)), Curve((100, 200), (30, 60), (7.0, 5.0))],
    }
    table = reach_table(curves, "fd", 6.0, lower_is_better=True)
    assert table.steps == {"DiT": [150.0, 200.0], "MDTv2": [100.0, 150.0]}
    assert table.ratios("MDTv2", "DiT") == pytest.approx([100 / 150, 150 / 200])
    assert table.ratios("MDTv2", "DiT", by="seconds") == pytest.approx([30 / 15, 45 / 20])
    assert spread([1.0, 3.0]) == "2.00 (1.00-3.00, 2 seeds)" and spread([]) == "n/a"


def test_mean_curve_and_curve_checks(tmp_path) -> None:
    runs = [Curve((1, 2), (1.0, 2.0), (3.0, 1.0)), Curve((1, 2), (3.0, 4.0), (5.0, 3.0))]
    steps, seconds, mean, low, high = mean_curve(runs)
    assert steps.tolist() == [1, 2] and seconds.tolist() == [2, 3]
    assert mean.tolist() == [4, 2] and low.tolist() == [3, 1] and high.tolist() == [5, 3]
    with pytest.raises(ValueError, match="evaluated at different steps"):
        mean_curve([runs[0], Curve((1, 3), (1.0, 2.0), (3.0, 1.0))])
    with pytest.raises(ValueError, match="steps must increase"):
        Curve((2, 1), (1.0, 2.0), (0.0, 0.0))
    png = plot_learning_curves({"fd": {"a": runs}}, tmp_path / "plot.png", floors={"fd": 0.5})
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eleven_arms_are_drawn_apart() -> None:
    """Past the 10 colours of the cycle, a model gets a colour in another line style: no two styles are the same."""
    from mdtblocks.evaluation.plot import curve_styles

    styles = curve_styles([f"arm{i}" for i in range(25)], [f"C{i}" for i in range(10)])
    assert len({tuple(sorted(style.items())) for style in styles.values()}) == 25
    assert styles["arm10"]["color"] == styles["arm0"]["color"] and styles["arm10"]["ls"] != styles["arm0"]["ls"]
