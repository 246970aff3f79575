"""Bars and curves per condition: means drawn, spread only with >= 2 seeds, clear errors."""

import numpy as np
import pytest
from matplotlib import image as mpimg
from matplotlib.container import BarContainer
from matplotlib.figure import Figure

from tinytf import plots


def test_grouped_bars_draw_the_means_and_min_max_only_with_several_seeds(tmp_path):
    values = {"base": {"a": [1.0, 3.0, 2.0], "b": [0.5, 0.5, 0.5]}, "fix": {"a": [0.0, 1.0, 2.0], "b": [4.0, 5.0, 6.0]}}
    fig = plots.seed_bars(values, ylabel="mass", title="t", save=tmp_path / "bars.png")
    ax = fig.axes[0]
    heights = sorted(round(p.get_height(), 6) for p in ax.patches)
    assert heights == sorted([2.0, 0.5, 1.0, 5.0])
    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert len(bars) == 2 and all(c.errorbar is not None for c in bars)
    assert "mean of 3 seeds" in ax.get_title()
    assert mpimg.imread(tmp_path / "bars.png").std() > 0.01
    one = plots.seed_bars({"base": {"a": 1.0}, "fix": {"a": 2.0}}, ylabel="y", title="t")
    assert all(c.errorbar is None for c in one.axes[0].containers if isinstance(c, BarContainer)) and "one seed" in one.axes[0].get_title()
    assert one.axes[0].get_legend() is None  # a single quantity needs no legend


def test_grouped_bars_reject_mismatched_inputs():
    with pytest.raises(ValueError, match="same quantities"):
        plots.seed_bars({"a": {"x": [1.0]}, "b": {"y": [1.0]}}, ylabel="", title="")
    with pytest.raises(ValueError, match="same number of runs"):
        plots.seed_bars({"a": {"x": [1.0, 2.0]}, "b": {"x": [1.0]}}, ylabel="", title="")
    with pytest.raises(TypeError, match="non-empty dict"):
        plots.seed_bars({}, ylabel="", title="")


def test_condition_curves_mean_band_and_shared_figure(tmp_path):
    fig = Figure(figsize=(8, 3), dpi=100, layout="constrained")
    left, right = fig.subplots(1, 2)
    x = np.array([1, 3, 5, 7, 11])
    runs = np.arange(15.0).reshape(3, 5)
    out = plots.condition_curves(x, {"base": runs, "fix": runs[0] * 2}, xlabel="x", ylabel="y", title="t",
                                 ax=right, vline=4, vline_label="train")
    assert out is fig and not left.lines
    np.testing.assert_allclose(right.lines[0].get_ydata(), runs.mean(0))
    assert len(right.collections) == 1  # a band for the 3-seed condition only
    assert [t.get_text() for t in right.get_legend().get_texts()] == ["base", "fix", "train"]
    with pytest.raises(ValueError, match=r"curves\['bad'\] has shape \(4,\)"):
        plots.condition_curves(x, {"bad": np.ones(4)}, xlabel="", ylabel="", title="")
