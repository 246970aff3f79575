"""Every figure renders a non-empty PNG of the promised size and rejects mismatched inputs."""

import numpy as np
import pytest
from matplotlib import image as mpimg
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from tinytf import plots

RNG = np.random.default_rng(0)


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def check_png(fig, path, dpi=100):
    """The PNG exists, has figsize * dpi pixels and is not blank."""
    assert isinstance(fig, Figure)
    pixels = mpimg.imread(path)
    w, h = fig.get_size_inches()
    assert pixels.shape[:2] == (round(h * dpi), round(w * dpi))
    assert pixels[..., :3].std() > 0.05  # something was drawn


TOKENS = ["BOS", "a", "b", "c", "d"]


def test_attention_grid_dict_and_array(tmp_path):
    maps = {"blocks.0.attn": softmax(RNG.normal(size=(2, 3, 5, 5))), "blocks.1.attn": softmax(RNG.normal(size=(2, 3, 5, 5)))}
    fig = plots.attention_grid(maps, TOKENS, save=tmp_path / "grid.png")
    check_png(fig, tmp_path / "grid.png")
    images = [ax for ax in fig.axes if ax.images]
    assert len(images) == 6  # 3 heads x 2 layers
    assert [t.get_text() for t in images[0].get_yticklabels()] == TOKENS
    assert any("attention weight" in ax.get_ylabel() for ax in fig.axes)  # the colour bar
    fig = plots.attention_grid(softmax(RNG.normal(size=(4, 2, 5, 7))), dpi=50, save=tmp_path / "arr.png")
    check_png(fig, tmp_path / "arr.png", dpi=50)


def test_attention_grid_cross_attention_labels_and_errors(tmp_path):
    cross = {"decoder.0.cross_attn": softmax(RNG.normal(size=(1, 2, 3, 5)))}
    fig = plots.attention_grid(cross, query_tokens=["q0", "q1", "q2"], key_tokens=TOKENS, save=tmp_path / "c.png")
    check_png(fig, tmp_path / "c.png")
    with pytest.raises(ValueError, match="tokens has 4 entries but layer 'blocks.0.attn' has 5 queries"):
        plots.attention_grid({"blocks.0.attn": np.ones((1, 2, 5, 5)) / 5}, TOKENS[:4])
    with pytest.raises(ValueError, match="query_tokens has 2 entries"):
        plots.attention_grid(cross, query_tokens=["q0", "q1"], key_tokens=TOKENS)
    with pytest.raises(ValueError, match="example=3 is out of range"):
        plots.attention_grid(cross, example=3)
    with pytest.raises(ValueError, match=r"expected \(L, N, T, S\)"):
        plots.attention_grid(np.ones((5, 5)))


def test_attention_on_image_patch_vector_and_map(tmp_path):
    image = RNG.random((32, 48, 3))
    fig = plots.attention_on_image(image, softmax(RNG.normal(size=24)), grid=(4, 6), save=tmp_path / "v.png")
    check_png(fig, tmp_path / "v.png")
    grey = np.zeros((64, 64))
    grey[10:30, 20:40] = 1.0
    fig = plots.attention_on_image(grey, softmax(RNG.normal(size=64)), save=tmp_path / "g.png")
    check_png(fig, tmp_path / "g.png")
    with pytest.raises(ValueError, match="grid 7x7 does not tile the 64x64 image"):
        plots.attention_on_image(grey, np.ones((7, 7)))
    with pytest.raises(ValueError, match="50 entries, not a square number"):
        plots.attention_on_image(grey, np.ones(50))
    with pytest.raises(ValueError, match=r"grid=\(4, 4\) has 16 cells"):
        plots.attention_on_image(grey, np.ones(64), grid=(4, 4))
    with pytest.raises(ValueError, match="image has shape"):
        plots.attention_on_image(np.ones((4, 4, 2)), np.ones((2, 2)))


def test_detr_queries(tmp_path):
    image = np.zeros((64, 64))
    image[16:32, 24:48] = 1.0
    Q = 5
    maps = softmax(RNG.normal(size=(Q, 64)))
    boxes = np.concatenate([RNG.uniform(0.3, 0.7, (Q, 2)), RNG.uniform(0.1, 0.3, (Q, 2))], 1)
    labels, scores = RNG.integers(0, 3, Q), RNG.uniform(0, 1, Q)
    fig = plots.detr_queries(image, maps.reshape(Q, 8, 8), boxes, labels, scores, class_names=["a", "b", "c"],
                             score_threshold=0.5, save=tmp_path / "d.png")
    check_png(fig, tmp_path / "d.png")
    assert sum(1 for ax in fig.axes if ax.images) == Q + 1
    fig = plots.detr_queries(image, maps, boxes * 64, labels, scores, box_format="cxcywh", normalized=False,
                             shared_scale=True, save=tmp_path / "d2.png")
    check_png(fig, tmp_path / "d2.png")
    with pytest.raises(ValueError, match="labels has 4 entries but query_maps has 5 queries"):
        plots.detr_queries(image, maps, boxes, labels[:4], scores)
    with pytest.raises(ValueError, match=r"boxes has shape \(5, 3\)"):
        plots.detr_queries(image, maps, boxes[:, :3], labels, scores)
    with pytest.raises(ValueError, match=r"query_maps\[0\] grid 3x3 does not tile"):
        plots.detr_queries(image, np.ones((Q, 3, 3)), boxes, labels, scores)
    with pytest.raises(ValueError, match="box_format='xywh'"):
        plots.detr_queries(image, maps, boxes, labels, scores, box_format="xywh")


def test_metric_curves_dict_history_and_log(tmp_path):
    steps = np.arange(0, 50, 5)
    history = {"entropy": (steps, RNG.random((10, 4))), "max_logit": (steps, np.exp(steps / 10.0)), "loss": np.linspace(3, 0, 7)}
    fig = plots.metric_curves(history, log_y={"max_logit"}, save=tmp_path / "m.png")
    check_png(fig, tmp_path / "m.png")
    assert [ax.get_yscale() for ax in fig.axes[:3]] == ["linear", "log", "linear"]
    assert len(fig.axes[0].lines) == 4  # one line per head

    class FakeHistory:  # tinytf.train.History keeps {name: ([steps], [values])} in .series
        series = {"loss": ([0, 1, 2], [3.0, 2.0, 1.0])}

    fig = plots.metric_curves(FakeHistory(), separate=False, save=tmp_path / "h.png")
    check_png(fig, tmp_path / "h.png")
    with pytest.raises(ValueError, match=r"history\['loss'\] has 2 steps and values of shape \(3,\)"):
        plots.metric_curves({"loss": ([0, 1], [1.0, 2.0, 3.0])})
    with pytest.raises(ValueError, match=r"names \['nope'\] not in history"):
        plots.metric_curves(history, names=["nope"])


@pytest.mark.parametrize("kind", ["length", "pruning", "deletion", "rank"])
def test_curve_plots_render_and_reject_mismatched_lengths(tmp_path, kind):
    xs = {"length": [32, 64, 128, 256], "pruning": [0, 0.25, 0.5, 1.0], "deletion": [1, 2, 3, 4], "rank": [1, 2, 4, 8]}[kind]
    fn = {"length": plots.length_curves, "pruning": plots.pruning_curves, "deletion": plots.deletion_curves,
          "rank": plots.rank_vs_depth}[kind]
    curves = {"a": RNG.random(4), "b (3 runs)": RNG.random((3, 4))}
    if kind == "rank":
        curves["collapsed"] = [0.5, 1e-3, 0.0, 0.0]  # zeros sit on the floor, not off the log axis
    fig = fn(xs, curves, save=tmp_path / f"{kind}.png")
    check_png(fig, tmp_path / f"{kind}.png")
    ax = fig.axes[0]
    assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title() and ax.get_legend() is not None
    with pytest.raises(ValueError, match=r"curves\['bad'\] has shape \(3,\): expected \(4,\) or \(runs, 4\)"):
        fn(xs, {"bad": [1.0, 2.0, 3.0]})
    with pytest.raises(TypeError, match="curves must be a non-empty dict"):
        fn(xs, {})


def test_pruning_legend_reports_normalised_auc():
    fig = plots.pruning_curves([0.0, 0.5, 1.0], {"importance": [1.0, 1.0, 0.5]})
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels[0] == "importance (AUC 0.875)"  # trapezoid: (1 + 1)/4 + (1 + 0.5)/4


def test_length_curves_legend_outside_does_not_overlap_the_axes(tmp_path):
    lengths = [32, 64, 128, 256]
    curves = {f"scheme {i}": np.linspace(0.8, 0.1 * i, 4) for i in range(7)}
    for legend in ("inside", "outside"):
        fig = plots.length_curves(lengths, curves, train_length=32, legend=legend, save=tmp_path / f"{legend}.png")
        renderer = FigureCanvasAgg(fig).get_renderer()
        ax_box = fig.axes[0].get_window_extent(renderer)
        legend_box = fig.axes[0].get_legend().get_window_extent(renderer)
        assert ax_box.overlaps(legend_box) == (legend == "inside")
        assert legend_box.x1 <= fig.bbox.x1 + 1  # fully inside the saved image
    with pytest.raises(ValueError, match=r"legend must be one of \('inside', 'outside'\), got 'left'"):
        plots.length_curves(lengths, curves, legend="left")
