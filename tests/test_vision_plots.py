"""The vision lessons' figures: condition curves, positional-code maps, feature maps, attributions, registers."""

import numpy as np
import pytest
from matplotlib import image as mpimg
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from tinytf import plots
from tinytf.positional import sine_2d

RNG = np.random.default_rng(3)


def check_png(fig, path, dpi=100):
    assert isinstance(fig, Figure)
    pixels = mpimg.imread(path)
    w, h = fig.get_size_inches()
    assert pixels.shape[:2] == (round(h * dpi), round(w * dpi))
    assert pixels[..., :3].std() > 0.05


def test_condition_panels_bands_only_with_several_runs_and_legend_outside(tmp_path):
    steps = np.array([0, 100, 200, 300, 400])
    panels = {"pair-cos": {"a": RNG.random((3, 5)), "b": RNG.random(5)},
              "recall": {"a": RNG.random((3, 5)), "b": RNG.random(5)}}
    fig = plots.condition_panels(steps, panels, titles=["t1", "t2"], save=tmp_path / "c.png")
    check_png(fig, tmp_path / "c.png")
    axes = [ax for ax in fig.axes if ax.get_ylabel()]
    assert [ax.get_ylabel() for ax in axes] == ["pair-cos", "recall"]
    for ax in axes:  # one band (condition "a", 3 runs), none for the single run of "b"
        assert sum(isinstance(c, PolyCollection) for c in ax.collections) == 1
    legend = fig.legends[0]
    labels = [t.get_text() for t in legend.get_texts()]
    assert labels == ["a (mean of 3, band min-max)", "b"]
    fig.canvas.draw()
    box = legend.get_window_extent()
    for ax in axes:  # beside the panels, never on a curve
        assert not box.overlaps(ax.get_window_extent())
    np.testing.assert_allclose(axes[0].lines[0].get_ydata(), panels["pair-cos"]["a"].mean(0))


def test_condition_panels_rejects_mismatched_input():
    with pytest.raises(ValueError, match="different conditions"):
        plots.condition_panels([0, 1], {"x": {"a": [1, 2]}, "y": {"b": [1, 2]}})
    with pytest.raises(ValueError, match=r"expected \(2,\) or \(runs, 2\)"):
        plots.condition_panels([0, 1], {"x": {"a": [1, 2, 3]}})
    with pytest.raises(ValueError, match="titles has 1 entries for 2 panels"):
        plots.condition_panels([0, 1], {"x": {"a": [1, 2]}, "y": {"a": [1, 2]}}, titles=["t"])
    with pytest.raises(TypeError, match="panels must be a non-empty dict"):
        plots.condition_panels([0, 1], {})


def test_code_similarity_maps_shows_the_cosine_with_the_reference_cell(tmp_path):
    h, w = 5, 7
    codes = {"t=10000": np.asarray(sine_2d(h, w, 16)), "random": RNG.normal(size=(h * w, 16))}
    fig = plots.code_similarity_maps(codes, (h, w), cell=(1, 3), save=tmp_path / "pe.png")
    check_png(fig, tmp_path / "pe.png")
    shown = [ax.images[0].get_array() for ax in fig.axes if ax.images]
    assert len(shown) == 2
    p = codes["random"] / np.linalg.norm(codes["random"], axis=-1, keepdims=True)
    np.testing.assert_allclose(shown[1], (p @ p[1 * w + 3]).reshape(h, w), rtol=1e-6)
    assert shown[0][1, 3] == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"expected \(35, D\)"):
        plots.code_similarity_maps({"x": np.ones((34, 4))}, (h, w))
    with pytest.raises(ValueError, match="outside the 5x7 grid"):
        plots.code_similarity_maps(codes, (h, w), cell=(5, 0))


def test_feature_map_rgb_colours_each_cell_by_its_class():
    f = np.zeros((3, 5, 4))
    f[..., 3] = 1.0  # background
    f[0, 1] = [0.0, 0.9, 0.1, 0.2]  # class 1
    f[2, 4] = [0.7, 0.0, 0.0, 0.1]  # class 0
    rgb = plots.feature_map_rgb(f, colours=[(1, 0, 0), (0, 1, 0), (0, 0, 1)], scale=2)
    assert rgb.shape == (6, 10, 3)
    np.testing.assert_array_equal(rgb[0:2, 2:4], np.broadcast_to([0.0, 1.0, 0.0], (2, 2, 3)))
    np.testing.assert_array_equal(rgb[4:6, 8:10], np.broadcast_to([1.0, 0.0, 0.0], (2, 2, 3)))
    assert rgb[0, 0].sum() == 0  # background is black
    with pytest.raises(ValueError, match="colours has 2 entries for 3 classes"):
        plots.feature_map_rgb(f, colours=[(1, 0, 0), (0, 1, 0)])
    with pytest.raises(ValueError, match=r"expected \(h, w, C \+ 1\)"):
        plots.feature_map_rgb(np.ones((3, 3)))


def test_attribution_maps_outline_the_relevant_patches(tmp_path):
    B, g, S = 5, 4, 32
    images = RNG.random((B, S, S, 3))
    scores = {"raw": RNG.random((B, g * g)), "rollout": RNG.random((B, g * g))}
    relevant = RNG.random((B, g * g)) < 0.3
    fig = plots.attribution_maps(images, scores, g, relevant=relevant, row_labels=[f"img {i}" for i in range(B)],
                                 n=3, save=tmp_path / "a.png")
    check_png(fig, tmp_path / "a.png")
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 3 * 3  # 3 images x (input + 2 methods)
    outlines = sum(isinstance(p, Rectangle) for ax in panels[:3] for p in ax.patches)
    assert outlines == 3 * relevant[0].sum()
    np.testing.assert_allclose(panels[1].images[1].get_array(), (scores["raw"][0] / scores["raw"][0].max()).reshape(g, g))
    with pytest.raises(ValueError, match=r"scores\['raw'\] has shape \(5, 9\)"):
        plots.attribution_maps(images, {"raw": np.ones((B, 9))}, g)
    with pytest.raises(ValueError, match="relevant has shape"):
        plots.attribution_maps(images, scores, g, relevant=np.ones((B, 3), bool))
    with pytest.raises(ValueError, match="B >= n=7"):
        plots.attribution_maps(images, scores, g, n=7)


def test_register_use_renders_histogram_and_bars(tmp_path):
    norms = {"plain": RNG.gamma(9.0, size=(50, 16)), "registers": RNG.gamma(9.0, size=(50, 16))}
    attention = {f"{m}, layer {i}": {"CLS -> CLS": RNG.random(), "CLS -> registers": RNG.random()}
                 for m in norms for i in (0, 1)}
    fig = plots.register_use(norms, attention, uniform=4 / 21, save=tmp_path / "r.png")
    check_png(fig, tmp_path / "r.png")
    bars = fig.axes[1].patches
    assert len(bars) == 4 * 2
    with pytest.raises(ValueError, match="different bar labels"):
        plots.register_use(norms, {"a": {"x": 1.0}, "b": {"y": 1.0}})
