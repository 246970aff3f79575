"""tinytf.plots.panels: each figure renders a PNG of the promised size and rejects mismatched inputs."""

import numpy as np
import pytest
from matplotlib import image as mpimg

from tinytf import plots

RNG = np.random.default_rng(0)


def check_png(fig, path, dpi=100):
    pixels = mpimg.imread(path)
    w, h = fig.get_size_inches()
    assert pixels.shape[:2] == (round(h * dpi), round(w * dpi))
    assert pixels[..., :3].std() > 0.05


def test_sweep_panels_one_legend_below_and_shared_colours(tmp_path):
    x = [2, 4, 8, 16, 32]
    panels = {"entropy": {"scaled": RNG.random(5), "unscaled": RNG.random(5)},
              "max weight": {"scaled": RNG.random(5), "unscaled": RNG.random(5)}}
    fig = plots.sweep_panels(x, panels, xlabel="d", log_x=2, hlines={"entropy": (0.5, "uniform")},
                             log_y=["max weight"], save=tmp_path / "s.png")
    check_png(fig, tmp_path / "s.png")
    assert len(fig.legends) == 1 and not any(ax.get_legend() for ax in fig.axes)
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert texts == ["scaled", "unscaled", "uniform"]  # each label once
    a, b = fig.axes[0].lines[0], fig.axes[1].lines[0]
    assert a.get_color() == b.get_color()  # same series, same colour in every panel
    assert fig.axes[1].get_yscale() == "log" and fig.axes[0].get_xscale() == "log"
    with pytest.raises(ValueError, match=r"panels\['entropy'\]\['scaled'\] has shape \(4,\): expected \(5,\)"):
        plots.sweep_panels(x, {"entropy": {"scaled": np.ones(4)}}, xlabel="d")


def test_query_rows_marks_and_checks(tmp_path):
    rows = RNG.dirichlet(np.ones(7), size=5)
    fig = plots.query_rows(rows, [0, 3, 6, 2, 1], key_labels=list("abcdefg"), save=tmp_path / "q.png")
    check_png(fig, tmp_path / "q.png")
    marks = fig.axes[0].collections[0].get_offsets()
    np.testing.assert_array_equal(marks[:, 0], [0, 3, 6, 2, 1])
    with pytest.raises(ValueError, match=r"marked must be 5 ints in \[0, 7\)"):
        plots.query_rows(rows, [0, 3, 7, 2, 1])
    with pytest.raises(ValueError, match="key_labels has 3 entries: expected 7"):
        plots.query_rows(rows, key_labels=list("abc"))


def test_annotated_heatmap_writes_every_value(tmp_path):
    m = np.array([[0.1, 0.9, 0.5], [0.3, 0.7, 0.05]])
    fig = plots.annotated_heatmap(m, xlabels=["h0", "h1", "h2"], ylabels=["L0", "L1"], save=tmp_path / "h.png")
    check_png(fig, tmp_path / "h.png")
    assert sorted(t.get_text() for t in fig.axes[0].texts) == sorted(f"{v:.2f}" for v in m.ravel())
    with pytest.raises(ValueError, match="ylabels has 3 entries: expected 2"):
        plots.annotated_heatmap(m, ylabels=["a", "b", "c"])


def test_grouped_bars_heights(tmp_path):
    fig = plots.grouped_bars(["a", "b", "c"], {"x": [0.1, 0.5, 0.9], "y": [0.2, 0.4, 0.6]}, ylabel="acc",
                             hlines=[(0.3, "chance")], save=tmp_path / "b.png")
    check_png(fig, tmp_path / "b.png")
    heights = [p.get_height() for p in fig.axes[0].patches]
    np.testing.assert_allclose(heights, [0.1, 0.5, 0.9, 0.2, 0.4, 0.6])
    with pytest.raises(ValueError, match=r"bars\['y'\] has shape \(2,\): expected \(3,\)"):
        plots.grouped_bars(["a", "b", "c"], {"y": [1, 2]}, ylabel="acc")


def test_sweep_panels_bands_fill_between_low_and_high(tmp_path):
    x = [1e-3, 1e-2, 1e-1]
    fig = plots.sweep_panels(x, {"loss": {"a": [3, 2, 1]}}, xlabel="lr", log_x=10,
                             bands={"loss": {"a": ([2.5, 1.5, 0.5], [3.5, 2.5, 1.5])}}, save=tmp_path / "b.png")
    poly = fig.axes[0].collections[0]
    ys = poly.get_paths()[0].vertices[:, 1]
    assert ys.min() == pytest.approx(0.5) and ys.max() == pytest.approx(3.5)
    with pytest.raises(ValueError, match=r"bands\['loss'\]\['a'\] has shapes \(2,\), \(3,\)"):
        plots.sweep_panels(x, {"loss": {"a": [3, 2, 1]}}, xlabel="lr", bands={"loss": {"a": ([1, 2], [1, 2, 3])}})


def test_run_curves_draws_every_seed_with_its_style(tmp_path):
    steps = np.arange(5)
    panels = {"loss": {"base": [(steps, steps * 1.0), (steps, steps * 2.0)], "fix": [(steps, np.ones(5))]},
              "logit": {"base": [(steps, 10.0 ** steps)]}}
    fig = plots.run_curves(panels, styles={"fix": {"colour": 3, "ls": "--"}}, log_y=["logit"],
                           hlines={"loss": (4.0, "chance")}, save=tmp_path / "r.png")
    assert mpimg.imread(tmp_path / "r.png").shape[:2] == (440, 860)
    loss_ax, logit_ax = fig.axes[:2]
    lines = loss_ax.get_lines()
    np.testing.assert_allclose(lines[1].get_ydata(), steps * 2.0)  # the second seed is drawn
    assert lines[1].get_alpha() < lines[0].get_alpha()  # ... and faded
    assert lines[2].get_linestyle() == "--" and lines[2].get_color() == plots.panels._PALETTE[3]
    assert logit_ax.get_yscale() == "log" and loss_ax.get_yscale() == "linear"
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["base", "fix", "chance"]
    with pytest.raises(ValueError, match=r"panels\['loss'\]\['a'\]\[0\] has x \(3,\) and y \(2,\)"):
        plots.run_curves({"loss": {"a": [([0, 1, 2], [1, 2])]}})
