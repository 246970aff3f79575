"""Bars and curves per condition: means drawn, spread only with >= 2 seeds, clear errors."""

import numpy as np
import pytest
from matplotlib import image as mpimg
from matplotlib.container import BarContainer
from matplotlib.figure import Figure

from tinytf import plots


def test_seed_bars_draw_the_means_and_min_max_only_with_several_seeds(tmp_path):
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


def test_seed_bars_reject_mismatched_inputs():
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


def test_condition_curves_bin_averages_consecutive_points():
    x = np.arange(1, 36)  # 35 points, bins of 7 -> 5 points
    v = np.random.default_rng(3).random((3, 35))
    fig = plots.condition_curves(x, {"a": v}, xlabel="x", ylabel="y", title="t", bin=7)
    line = fig.axes[0].lines[0]
    np.testing.assert_allclose(line.get_xdata(), x.reshape(5, 7).mean(1))
    np.testing.assert_allclose(line.get_ydata(), v.reshape(3, 5, 7).mean(2).mean(0))
    x11 = np.arange(11)  # remainder dropped: 11 // 3 = 3 bins
    fig = plots.condition_curves(x11, {"a": x11 * 2.0}, xlabel="x", ylabel="y", title="t", bin=3)
    np.testing.assert_allclose(fig.axes[0].lines[0].get_ydata(), [2.0, 8.0, 14.0])
    with pytest.raises(ValueError, match=r"bin must be an int in \[1, 11\]"):
        plots.condition_curves(x11, {"a": x11}, xlabel="x", ylabel="y", title="t", bin=13)


def test_panel_row_draws_bars_and_curves_side_by_side(tmp_path):
    vals = {"base": {"q": np.array([1.0, 3.0])}, "fix": {"q": np.array([5.0, 7.0])}}
    fig = plots.panel_row([("bars", dict(values=vals, ylabel="y", title="bars")),
                                  ("curves", dict(x=np.arange(5), curves={"c": np.arange(5.0)}, xlabel="x", ylabel="y",
                                                  title="curves"))],
                                 suptitle="both", width_ratios=[2, 1], save=tmp_path / "p.png")
    assert (tmp_path / "p.png").exists() and fig.get_suptitle() == "both"
    bars, curves = fig.axes[:2]
    np.testing.assert_allclose([p.get_height() for p in bars.patches], [2.0, 6.0])
    assert bars.get_position().width > 1.5 * curves.get_position().width
    np.testing.assert_allclose(curves.lines[0].get_ydata(), np.arange(5.0))
    with pytest.raises(ValueError, match="panels must be a non-empty list"):
        plots.panel_row([("pie", {})], suptitle="x")
