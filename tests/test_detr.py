"""Tests for the DETR model (tinytf.models.detr) and its training routine (tinytf.apps.detr_recipe).

Oracles: `jax.lax.conv_general_dilated` for the backbone's convolution, a numpy softmax of the
decoder's own projections for the captured cross-attention, exact symmetry for identical
queries, the sine codes' geometry for the conditional spatial query. Training is checked with
tiny budgets; the preset's AP figure is a slow test.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from matplotlib.figure import Figure

from tinytf.apps import detr_recipe
from tinytf.apps.detr_recipe import DETRTrainConfig, ShapesTask, detr_figure, evaluate_detr, query_maps, train_detr
from tinytf.models.detr import DETR, DETRConfig, StridedConv, point_encoding
from tinytf.capture import capture_attention
from tinytf.positional import sine_2d

# A very small DETR that still has every part: compiles fast, trains in seconds.
SMALL = DETRConfig(num_classes=3, num_queries=7, d_model=16, num_heads=2, encoder_layers=1, decoder_layers=2,
                   backbone_channels=(4, 8, 8))


def images(n=3, seed=0):
    return ShapesTask().sample(jax.random.key(seed), batch_size=n, num_classes=3)["images"]


def pair_cos(maps):
    """Mean pairwise cosine of (Q, P) rows."""
    m = np.asarray(maps, np.float64).reshape(maps.shape[0], -1)
    m = m / np.linalg.norm(m, axis=1, keepdims=True)
    c = m @ m.T
    return c[np.triu_indices(len(m), 1)].mean()


# --------------------------------------------------------------------------------- backbone


@pytest.mark.parametrize("shape", [(2, 64, 64, 3), (3, 7, 9, 5), (1, 11, 6, 2)])
def test_strided_conv_matches_lax_convolution(shape):
    conv = StridedConv(shape[-1], 5, rngs=nnx.Rngs(1))
    conv.bias[...] = jax.random.normal(jax.random.key(2), (5,))
    x = jax.random.normal(jax.random.key(0), shape)
    want = jax.lax.conv_general_dilated(x, conv.kernel[...], (2, 2), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC")) + conv.bias[...]
    got = conv(x)
    assert got.shape == (shape[0], -(-shape[1] // 2), -(-shape[2] // 2), 5)
    np.testing.assert_allclose(got, want, atol=1e-5)


# ------------------------------------------------------------------------------------ model


@pytest.mark.parametrize("kw", [{}, {"conditional": True}, {"conditional": True, "refine": True}])
def test_outputs_have_detr_shapes_and_ranges(kw):
    cfg = SMALL.replace(decoder_layers=3, **kw)
    out = DETR(cfg, rngs=nnx.Rngs(0))(images(5))
    assert out["logits"].shape == (5, 7, 4)
    assert out["boxes"].shape == (5, 7, 4)
    assert len(out["aux"]) == 2
    for layer in out["aux"]:
        assert layer["logits"].shape == (5, 7, 4) and layer["boxes"].shape == (5, 7, 4)
    boxes = np.asarray(out["boxes"])
    assert np.all((boxes > 0) & (boxes < 1))


def test_feature_map_input_bypasses_the_backbone():
    cfg = SMALL.replace(feature_dim=5, feature_size=3)
    model = DETR(cfg, rngs=nnx.Rngs(0))
    assert model.backbone is None
    out = model(jax.random.normal(jax.random.key(0), (2, 3, 3, 5)))
    assert out["logits"].shape == (2, 7, 4)
    assert model.cross_attention_maps(jnp.ones((2, 3, 3, 5))).shape == (2, 2, 7, 3, 3)


def test_cross_attention_maps_are_the_decoders_softmax_on_the_grid():
    """capture_attention's decoder.0.cross_attn equals softmax(q k^T / sqrt(H)) built from the layer's weights."""
    model = DETR(SMALL, rngs=nnx.Rngs(3))
    x = images(2, seed=4)
    maps = capture_attention(model, x)
    assert [n for n in maps if "cross_attn" in n] == ["decoder.0.cross_attn", "decoder.1.cross_attn"]
    w = np.asarray(maps["decoder.0.cross_attn"])  # (B, N, Q, P)
    assert w.shape == (2, 2, 7, 64)
    # the first decoder layer by hand: tgt = 0, self-attention, then cross-attention logits
    memory = model.features(x)
    pos = model.positional_encoding()[None]
    for block in model.encoder:
        memory = block(memory, query_pos=pos)
    layer = model.decoder[0]
    qpos = jnp.broadcast_to(model.query_embed[...], (2, 7, 16))
    tgt = layer.norm1(layer.attn(jnp.zeros((2, 7, 16)), query_pos=qpos, key_pos=qpos))
    ca = layer.cross_attn
    q = np.asarray(ca.query_proj(tgt + qpos)).reshape(2, 7, 2, 8)  # (B, Q, N, H)
    k = np.asarray(ca.key_proj(memory + pos)).reshape(2, 64, 2, 8)  # (B, P, N, H)
    logits = np.einsum("bqnh,bpnh->bnqp", q, k) / np.sqrt(8)
    want = np.exp(logits - logits.max(-1, keepdims=True))
    want /= want.sum(-1, keepdims=True)
    np.testing.assert_allclose(w, want, atol=1e-5)
    # reshaped to the 8x8 grid, row-major: cell (i, j) is flat index 8 i + j
    grid = np.asarray(model.cross_attention_maps(x, layer=0))
    assert grid.shape == (2, 2, 7, 8, 8)
    np.testing.assert_allclose(grid[:, :, :, 2, 5], w[:, :, :, 8 * 2 + 5], atol=1e-7)
    np.testing.assert_allclose(grid.sum((-1, -2)), 1.0, atol=1e-5)
    last = np.asarray(query_maps(model, x))  # head mean of the last layer
    np.testing.assert_allclose(last, np.asarray(maps["decoder.1.cross_attn"]).mean(1).reshape(2, 7, 8, 8),
                               atol=1e-6)


@pytest.mark.parametrize("kw", [{}, {"conditional": True}])
@pytest.mark.parametrize("query_init", ["identical", "zero"])
def test_identical_queries_give_identical_maps_and_boxes(kw, query_init):
    """Queries differ only through query_embed (decoder input 0): identical embeddings, identical queries."""
    model = DETR(SMALL.replace(query_init=query_init, **kw), rngs=nnx.Rngs(0))
    x = images(2)
    maps = np.asarray(query_maps(model, x))  # (B, Q, 8, 8)
    out = model(x)
    for b in range(2):
        assert pair_cos(maps[b]) == pytest.approx(1.0, abs=1e-6)
        np.testing.assert_allclose(maps[b], np.broadcast_to(maps[b, :1], maps[b].shape), atol=1e-6)
        np.testing.assert_allclose(out["boxes"][b], np.broadcast_to(out["boxes"][b, :1], (7, 4)), atol=1e-6)
    learned = np.asarray(query_maps(DETR(SMALL.replace(**kw), rngs=nnx.Rngs(0)), x))
    assert pair_cos(learned[0]) < 1 - 1e-3  # the control: learned embeddings do differ


def test_without_spatial_encoding_identical_cells_get_uniform_maps():
    """Content-only keys cannot tell equal cells apart: every query spreads evenly (the lesson's failure)."""
    features = jnp.broadcast_to(jax.random.normal(jax.random.key(1), (5,)), (2, 8, 8, 5))  # every cell alike
    cfg = SMALL.replace(feature_dim=5, spatial_pe="none")
    model = DETR(cfg, rngs=nnx.Rngs(0))
    assert not np.any(np.asarray(model.positional_encoding()))
    np.testing.assert_allclose(query_maps(model, features), 1 / 64, atol=1e-6)
    with_pe = np.asarray(query_maps(DETR(cfg.replace(spatial_pe="sine"), rngs=nnx.Rngs(0)), features))
    assert np.abs(with_pe - 1 / 64).max() > 1e-3  # the control: sine positions make cells differ


def test_the_position_code_is_state_so_code_variants_share_one_program():
    """spatial_pe / pe_temperature change the PositionCode variable, not the traced program, and the
    code is not a Param (optimisers leave it alone)."""
    cfgs = [SMALL.replace(feature_dim=5), SMALL.replace(feature_dim=5, spatial_pe="none"),
            SMALL.replace(feature_dim=5, pe_temperature=20.0)]
    models = [DETR(c, rngs=nnx.Rngs(0)) for c in cfgs]
    np.testing.assert_allclose(models[0].pos_embed[...], sine_2d(8, 8, 16).reshape(64, 16), atol=1e-6)
    assert not np.any(np.asarray(models[1].pos_embed[...]))
    np.testing.assert_allclose(models[2].pos_embed[...], sine_2d(8, 8, 16, temperature=20.0).reshape(64, 16),
                               atol=1e-6)
    assert "pos_embed" not in nnx.state(models[0], nnx.Param)
    x = jnp.ones((1, 8, 8, 5))

    def program(model):
        graphdef, state = nnx.split(model)
        return str(jax.make_jaxpr(lambda s: nnx.merge(graphdef, s)(x)["boxes"])(state))

    assert program(models[0]) == program(models[1]) == program(models[2])


def test_conditional_queries_look_at_their_reference_points_from_the_start():
    """At init (lambda = 1, identity projections) layer 1's map on a blank image peaks at r_q's cell."""
    cfg = DETRConfig(conditional=True, num_queries=11, pe_temperature=20.0)
    model = DETR(cfg, rngs=nnx.Rngs(5))
    maps = np.asarray(model.cross_attention_maps(jnp.zeros((1, 64, 64, 3)), layer=0)).mean(1)[0]  # (Q, 8, 8)
    ref = np.asarray(jax.nn.sigmoid(model.reference[...]))  # (Q, 2) (x, y) in [0, 1]
    want = np.floor(ref[:, ::-1] * 8).astype(int)  # (row, column) of each point's cell
    got = np.stack(np.unravel_index(maps.reshape(11, -1).argmax(-1), (8, 8)), -1)
    np.testing.assert_array_equal(got, want)
    assert np.all(maps.reshape(11, -1).max(-1) > 1.2 / 64)  # a real peak, above uniform (1/64)


def test_point_encoding_of_cell_centres_is_sine_2d():
    rows, cols = np.meshgrid(np.arange(8), np.arange(8), indexing="ij")
    centres = np.stack([(cols.ravel() + 0.5) / 8, (rows.ravel() + 0.5) / 8], -1)  # (64, 2) as (x, y)
    for normalize in (False, True):
        np.testing.assert_allclose(point_encoding(jnp.asarray(centres), 12, 8, 50.0, normalize),
                                   sine_2d(8, 8, 12, temperature=50.0, normalize=normalize), atol=1e-5)


def test_model_errors():
    with pytest.raises(ValueError, match="d_model must be divisible"):
        DETRConfig(d_model=30, num_heads=3)
    with pytest.raises(ValueError, match="refine=True"):
        DETRConfig(refine=True)
    with pytest.raises(ValueError, match="spatial_pe must be one of"):
        DETRConfig(spatial_pe="learned")
    with pytest.raises(ValueError, match="image_size=60 does not map"):
        DETRConfig(image_size=60)
    with pytest.raises(ValueError, match="num_queries must be an int >= 1"):
        DETRConfig(num_queries=0)
    with pytest.raises(TypeError, match="cfg must be a DETRConfig"):
        DETR({"num_classes": 3}, rngs=nnx.Rngs(0))
    model = DETR(SMALL, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"images must have shape \(B, 64, 64, 3\), got \(2, 32, 32, 3\)"):
        model(jnp.zeros((2, 32, 32, 3)))
    with pytest.raises(ValueError, match=r"layer must be an int in \[-2, 2\)"):
        model.cross_attention_maps(images(1), layer=2)
    with pytest.raises(ValueError, match="features must have shape"):
        DETR(SMALL.replace(feature_dim=5), rngs=nnx.Rngs(0))(jnp.zeros((1, 8, 8, 4)))


# --------------------------------------------------------------------------------- training

QUICK = DETRTrainConfig(model=SMALL, steps=40, batch_size=8, learning_rate=2e-3, warmup=5)


@functools.cache
def quick_run():
    return train_detr(QUICK, seed=0, progress=False, eval_every=20, eval_images=6)


def test_a_short_run_lowers_the_loss():
    model, history = quick_run()
    loss = history["loss"]
    assert len(loss) == 40 and np.all(np.isfinite(loss))
    assert loss[-8:].mean() < 0.8 * loss[:8].mean()
    for name in ("loss_ce", "loss_l1", "loss_giou", "loss_aux", "class_accuracy", "cardinality_error"):
        assert name in history
    assert model.cfg == SMALL
    np.testing.assert_array_equal(history.steps("eval/AP50"), [0, 20, 40])  # held-out AP while training
    assert np.all((history["eval/AP50"] >= 0) & (history["eval/AP50"] <= 1))


def test_evaluate_detr_reports_coco_ap_on_held_out_images():
    model, _ = quick_run()
    result = evaluate_detr(model, num_images=13, seed=2, task=QUICK.task, batch_size=5)
    assert set(result) >= {"AP", "AP50", "AP75", "recall50", "num_images", "num_objects"}
    assert result["num_images"] == 13 and 13 <= result["num_objects"] <= 65
    for k in ("AP", "AP50", "AP75", "recall50"):
        assert 0.0 <= result[k] <= 1.0
    assert result["AP75"] <= result["AP50"]
    again = evaluate_detr(model, num_images=13, seed=2, task=QUICK.task, batch_size=13)
    assert again["AP"] == result["AP"]  # batching does not change the images


def test_recall_counts_objects_hit_by_a_confident_right_detection():
    gt_boxes = [np.array([[0, 0, 10, 10], [20, 20, 30, 30.]]), np.zeros((0, 4))]
    gt_labels = [np.array([1, 2]), np.zeros(0, int)]
    pred_boxes = [np.array([[0, 0, 10, 12], [20, 20, 30, 30], [21, 20, 30, 30.]]), np.array([[1, 1, 2, 2.]])]
    pred_scores = [np.array([0.9, 0.3, 0.8]), np.array([0.9])]
    # object 1: IoU 10/12 >= 0.5, right class, confident -> hit; object 2: exact box but score 0.3,
    # and the confident one has the wrong class -> missed
    pred_labels = [np.array([1, 2, 0]), np.array([0])]
    assert detr_recipe._recall(pred_boxes, pred_scores, pred_labels, gt_boxes, gt_labels) == 0.5


def test_detr_figure_renders(tmp_path):
    model = DETR(SMALL, rngs=nnx.Rngs(0))
    fig = detr_figure(model, images(2), index=1, score_threshold=None, save=tmp_path / "q.png")
    assert isinstance(fig, Figure)
    assert len(fig.axes) >= 1 + SMALL.num_queries  # the image, one panel per query (+ colour bar)
    assert (tmp_path / "q.png").stat().st_size > 1000
    with pytest.raises(ValueError, match=r"index=2: expected an int in \[0, 2\)"):
        detr_figure(model, images(2), index=2)


def test_training_errors():
    with pytest.raises(ValueError, match="num_queries=3 < task.max_objects=5"):
        DETRTrainConfig(model=SMALL.replace(num_queries=3))
    with pytest.raises(ValueError, match="at most 5 classes"):
        DETRTrainConfig(model=SMALL.replace(num_classes=6))
    with pytest.raises(ValueError, match="feature_dim must be None"):
        DETRTrainConfig(model=SMALL.replace(feature_dim=5))
    with pytest.raises(ValueError, match="steps must be a positive int"):
        DETRTrainConfig(steps=0)
    with pytest.raises(TypeError, match="config must be a DETRTrainConfig"):
        train_detr({"steps": 3})
    with pytest.raises(ValueError, match="different DETRConfig"):
        train_detr(QUICK, model=DETR(SMALL.replace(num_queries=8), rngs=nnx.Rngs(0)), steps=1)
    with pytest.raises(ValueError, match="num_images must be a positive int"):
        evaluate_detr(DETR(SMALL, rngs=nnx.Rngs(0)), num_images=0)


@pytest.mark.slow
def test_preset_reaches_ap50_of_0_8_on_held_out_images():
    model, history = train_detr(seed=0, progress=False)
    result = evaluate_detr(model, num_images=500, seed=1)
    assert result["AP50"] >= 0.8, result
