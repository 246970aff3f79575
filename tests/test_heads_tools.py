"""The heads lesson's library pieces against brute force: the two-copy task, copy-head scores,
pruning summaries, adjacent-layer JS, the small models, and their figures."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from matplotlib import image as mpimg
from scipy.spatial.distance import jensenshannon

from tinytf import data, plots
from tinytf.diagnostics import (adjacent_layer_js, compare_pruning_orders, copy_head_scores, jitted_metric,
                                pruning_summary)
from tinytf.models import AttentionOnlyLM, SequenceClassifier
from tinytf.train import accuracy


def test_variable_copy_task_layout():
    batch = data.variable_copy_task(jax.random.key(3), batch_size=7, min_length=3, max_length=5, vocab_size=11)
    tokens, lengths = np.asarray(batch["tokens"]), np.asarray(batch["length"])
    assert tokens.shape == (7, 10) and set(lengths) <= {3, 4, 5}
    for row, L, mask, targets in zip(tokens, lengths, np.asarray(batch["loss_mask"]), np.asarray(batch["targets"])):
        assert len(set(row[:L])) == L and row[:L].max() < 11  # distinct tokens
        np.testing.assert_array_equal(row[L:2 * L], row[:L])  # the second copy
        assert (row[2 * L:] == 11).all()  # padding
        np.testing.assert_array_equal(np.flatnonzero(mask), np.arange(L, 2 * L - 1))
        np.testing.assert_array_equal(targets[:-1], row[1:])
    with pytest.raises(ValueError, match="vocab_size=4 < max_length=5"):
        data.variable_copy_task(jax.random.key(0), batch_size=2, max_length=5, min_length=2, vocab_size=4)


def brute_force_scores(w, lengths):
    """Loops over every valid row: prev = A[i, i-1] for i in 1..2L-1; induction = A[L+k, k+1]."""
    B, N, T, _ = w.shape
    prev, ind, prev_chance, ind_chance = [], [], [], []
    for b in range(B):
        L = lengths[b]
        for i in range(1, 2 * L):
            prev.append(w[b, :, i, i - 1])
            prev_chance.append(1 / (i + 1))
        for k in range(L):
            ind.append(w[b, :, L + k, k + 1])
            ind_chance.append(1 / (L + k + 1))
    return np.mean(prev, 0), np.mean(ind, 0), np.mean(prev_chance), np.mean(ind_chance)


def test_copy_head_scores_match_brute_force():
    rng = np.random.default_rng(0)
    w = rng.random((5, 3, 14, 14))
    w = np.tril(w)
    w /= w.sum(-1, keepdims=True)
    lengths = np.array([3, 7, 5, 4, 6])
    got = copy_head_scores({"a": w, "b": w[:, ::-1]}, lengths)
    prev, ind, pc, ic = brute_force_scores(w, lengths)
    np.testing.assert_allclose(got["prev"]["a"], prev, rtol=1e-6)
    np.testing.assert_allclose(got["induction"]["a"], ind, rtol=1e-6)
    np.testing.assert_allclose(got["induction"]["b"], brute_force_scores(w[:, ::-1], lengths)[1], rtol=1e-6)
    np.testing.assert_allclose([got["prev chance"], got["induction chance"]], [pc, ic], rtol=1e-6)
    uniform = np.tril(np.ones((5, 3, 14, 14)))
    uniform /= uniform.sum(-1, keepdims=True)  # uniform causal attention scores exactly its chance level
    got = copy_head_scores(uniform, lengths)
    np.testing.assert_allclose(got["prev"]["0"], got["prev chance"], rtol=1e-6)
    np.testing.assert_allclose(got["induction"]["0"], got["induction chance"], rtol=1e-6)
    with pytest.raises(ValueError, match="cannot hold two copies of up to 8 tokens"):
        copy_head_scores(w, np.array([3, 8, 5, 4, 6]))
    with pytest.raises(ValueError, match=r"lengths must be \(5,\) ints"):
        copy_head_scores(w, np.array([3, 4]))


def test_pruning_summary_by_hand():
    fr = np.array([0, 0.25, 0.5, 0.75, 1.0])
    y = np.array([1.0, 0.99, 0.985, 0.9, 0.5])
    got = pruning_summary(fr, y)
    assert got["plateau"] == 0.5  # 0.985 >= 1 - 0.02, 0.9 is not
    assert got["acc @50%"] == 0.985
    np.testing.assert_allclose(got["AUC"], np.trapezoid(y, fr))
    runs = np.stack([y, y - 0.1])
    assert pruning_summary(fr, runs, full=1.0)["plateau"] == 0.0  # the mean curve fails at once
    with pytest.raises(ValueError, match="strictly ascending"):
        pruning_summary(fr[::-1], y)


def test_adjacent_layer_js_against_scipy():
    rng = np.random.default_rng(1)
    maps = {f"l{i}": rng.dirichlet(np.ones(5), size=(3, 2, 5)) for i in range(3)}  # (B=3, N=2, T=5, S=5)
    got = adjacent_layer_js(maps)
    mean = [m.mean(1) for m in maps.values()]
    for i in range(2):
        same = np.mean(jensenshannon(mean[i], mean[i + 1], axis=-1) ** 2)
        other = np.mean(jensenshannon(mean[i], np.roll(mean[i + 1], 1, axis=0), axis=-1) ** 2)
        np.testing.assert_allclose([got["same input"][i], got["other input"][i]], [same, other], rtol=1e-4)
    with pytest.raises(ValueError, match="needs >= 2 layers"):
        adjacent_layer_js({"l0": maps["l0"]})


def test_small_models_shapes_causality_and_pruning_orders():
    lm = AttentionOnlyLM(13, 16, 2, rngs=nnx.Rngs(0))
    tokens = jax.random.randint(jax.random.key(0), (3, 9), 0, 13)
    out = lm(tokens)
    assert out.shape == (3, 9, 13)
    changed = lm(tokens.at[:, 6].set((tokens[:, 6] + 1) % 13))
    np.testing.assert_allclose(out[:, :6], changed[:, :6], atol=1e-6)  # causal: the past does not see the future
    clf = SequenceClassifier(16, 24, 32, 4, num_layers=2, rngs=nnx.Rngs(1))
    batch = data.counting_task(jax.random.key(2), batch_size=64)
    assert clf(batch["tokens"]).shape == (64, 2)

    def per_example(model, b):
        logp = jax.nn.log_softmax(model(b["tokens"]))
        return -jnp.take_along_axis(logp, b["label"][:, None], axis=1)[:, 0]

    eval_fn = jitted_metric(clf, lambda m, b: accuracy(m(b["tokens"]), b["label"]), batch)
    assert eval_fn(clf) == pytest.approx(float(accuracy(clf(batch["tokens"]), batch["label"])))
    study = compare_pruning_orders(clf, eval_fn, per_example, [batch], num_random=3)
    np.testing.assert_allclose(study["fractions"], np.arange(9) / 8)
    assert study["curves"]["random order"].shape == (3, 9)
    for name, curve in study["curves"].items():  # every order starts at the full model and ends at no heads
        c = np.atleast_2d(curve)
        np.testing.assert_allclose(c[:, 0], eval_fn(clf))
        np.testing.assert_allclose(c[:, -1], c[0, -1])


def test_layer_similarity_and_heatmap_panels(tmp_path):
    fig = plots.layer_similarity(np.array([[0, 0.05, 0.1], [0.05, 0, 0.02], [0.1, 0.02, 0]]), [0.05, 0.02],
                                 [0.06, 0.03], save=tmp_path / "s.png")
    assert mpimg.imread(tmp_path / "s.png").shape[:2] == (420, 1000)
    bars = next(ax for ax in fig.axes if ax.patches)
    np.testing.assert_allclose([p.get_height() for p in bars.patches], [0.05, 0.02, 0.06, 0.03])
    with pytest.raises(ValueError, match=r"js has shape \(2, 3\)"):
        plots.layer_similarity(np.zeros((2, 3)), [0], [0])
    fig = plots.heatmap_panels({"a": np.eye(2), "b": np.ones((2, 2))}, xlabels=["h0", "h1"], save=tmp_path / "h.png")
    assert len([ax for ax in fig.axes if ax.images]) == 2
