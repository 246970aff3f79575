"""Flash attention against the dense path (values and gradients, every feature), its tile skipping
against a brute-force mask, its dropout against finite differences, and the path choice."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from tinytf import attention as A
from tinytf.attention.flash import _key_block_range, _Plan, _query_block_range, flash_attention

B, T, S, N, K, H = 2, 13, 11, 6, 3, 4
k1, k2, k3, k4, k5 = jax.random.split(jax.random.key(0), 5)
Q = jax.random.normal(k1, (B, T, N, H))
KEY = jax.random.normal(k2, (B, S, K, H))
V = jax.random.normal(k3, (B, S, K, H))
BIAS = jax.random.normal(k4, (1, N, T, S))
MASK = jax.random.bernoulli(k5, 0.8, (B, 1, T, S))
SINK = jnp.linspace(-1.0, 1.0, N)

FEATURES = {
    "plain": {}, "causal": dict(is_causal=True), "causal top-left": dict(is_causal=True, causal_alignment="top_left"),
    "window 3": dict(window=3), "window (2, 1)": dict(window=(2, 1)),
    "softmax1": dict(normalizer="softmax1", is_causal=True), "ssmax": dict(normalizer="ssmax", is_causal=True),
    "sink": dict(sink=True), "soft-cap": dict(logit_cap=2.0, is_causal=True), "bias": dict(bias=True, is_causal=True),
    "mask": dict(mask=True), "lengths": dict(query_lengths=jnp.array([5, 13]), key_lengths=jnp.array([11, 3])),
    "everything": dict(bias=True, normalizer="ssmax", logit_cap=1.5, mask=True, is_causal=True),
}


def run(path, q, k, v, bias, sink, cfg, **tiles):
    cfg = dict(cfg)
    mask = MASK if cfg.pop("mask", False) else None
    if cfg.pop("bias", False):
        cfg["bias"] = bias
    if cfg.pop("sink", False):
        cfg["sink"] = sink
    if path == "dense":
        return A.dot_product_attention(q, k, v, mask, chunk_size=None, **cfg)[0]
    return flash_attention(q, k, v, mask, **tiles, **cfg)


@pytest.mark.parametrize("name", sorted(FEATURES))
def test_flash_equals_dense_with_gradients(name):
    """Grouped heads (N=6, K=3), tiles of 4 x 3 that do not divide T=13 or S=11."""
    cfg = FEATURES[name]
    dense = run("dense", Q, KEY, V, BIAS, SINK, cfg)
    flash = run("flash", Q, KEY, V, BIAS, SINK, cfg, block_q=4, block_k=3)
    np.testing.assert_allclose(flash, dense, atol=2e-5)
    cotangent = jax.random.normal(jax.random.key(9), dense.shape)
    grads = [jax.grad(lambda *x: (run(path, *x, cfg, **tiles) * cotangent).sum(), argnums=(0, 1, 2, 3, 4))(
        Q, KEY, V, BIAS, SINK) for path, tiles in (("dense", {}), ("flash", dict(block_q=4, block_k=3)))]
    for d, f in zip(*grads):  # q, k, v, and the bias and sink where they are used
        np.testing.assert_allclose(f, d, atol=5e-5)


def test_flash_dropout_is_seeded_and_its_backward_is_exact():
    key = jax.random.key(3)
    f = lambda q, k, v: flash_attention(q, k, v, is_causal=True, dropout_rate=0.3, dropout_key=key,  # noqa: E731
                                        block_q=4, block_k=3)
    np.testing.assert_array_equal(f(Q, KEY, V), f(Q, KEY, V))
    other = flash_attention(Q, KEY, V, is_causal=True, dropout_rate=0.3, dropout_key=jax.random.key(4),
                            block_q=4, block_k=3)
    assert not np.allclose(f(Q, KEY, V), other)
    # the same key draws the same masks in the backward pass: the custom VJP agrees with finite differences
    small = [x[:1, :5, :2] for x in (Q, KEY, V)]
    g = lambda q, k, v: flash_attention(q, k, v, dropout_rate=0.3, dropout_key=key, block_q=2, block_k=2)  # noqa: E731
    check_grads(g, small, order=1, modes=("rev",), atol=1e-2, rtol=1e-2)


@pytest.mark.parametrize("cfg", [dict(is_causal=True), dict(window=5), dict(window=(3, 2)),
                                 dict(is_causal=True, q_offset=0), dict(window=(0, 4), q_offset=-3)])
def test_skipped_tiles_are_exactly_the_fully_masked_ones(cfg):
    """Brute force: a tile is visited iff some (query, key) pair in it may attend, from both loop orders."""
    T_, S_, bq, bk = 23, 29, 4, 5
    q_offset = cfg.pop("q_offset", S_ - T_)
    plan = _Plan(T=T_, S=S_, block_q=bq, block_k=bk, n_q=6, n_k=6, q_offset=q_offset, scale=1.0,
                 is_causal=cfg.get("is_causal", False), window=cfg.get("window"), logit_cap=None, dropout_rate=0.0,
                 has_sink=False, ssmax=False, groups=1)
    mask = np.asarray(A.structured_mask(6 * bq, q_offset, 0, 6 * bk, plan.is_causal, plan.window)[0, 0])
    if mask is None or mask.ndim == 0:
        mask = np.ones((6 * bq, 6 * bk), bool)
    for i, j in itertools.product(range(6), range(6)):
        visible = mask[i * bq:(i + 1) * bq, j * bk:(j + 1) * bk].any()
        first, last = (int(x) for x in _key_block_range(plan, i))
        q_first, q_last = (int(x) for x in _query_block_range(plan, j))
        assert (first <= j < last) == visible, (i, j)
        assert (q_first <= i < q_last) == visible, (i, j)


def test_causal_flash_visits_about_half_the_tiles():
    n = 16
    plan = _Plan(T=n * 8, S=n * 8, block_q=8, block_k=8, n_q=n, n_k=n, q_offset=0, scale=1.0, is_causal=True,
                 window=None, logit_cap=None, dropout_rate=0.0, has_sink=False, ssmax=False, groups=1)
    visited = sum(int(last - first) for first, last in (_key_block_range(plan, i) for i in range(n)))
    assert visited == n * (n + 1) // 2  # 136 of 256 tiles


def test_the_default_path_is_flash_for_long_inputs_unless_weights_are_needed():
    q = jax.random.normal(jax.random.key(5), (1, 2048, 1, 8))
    out, weights = A.dot_product_attention(q, q, q, is_causal=True)
    assert weights is None  # long: flash, which never forms the weights
    dense, weights = A.dot_product_attention(q, q, q, is_causal=True, need_weights=True)
    assert weights.shape == (1, 1, 2048, 2048)
    np.testing.assert_allclose(out, dense, atol=2e-5)
    short, w_short = A.dot_product_attention(q[:, :100], q[:, :100], q[:, :100], is_causal=True)
    assert w_short.shape == (1, 1, 100, 100)  # short: dense
    _, w_sigmoid = A.dot_product_attention(q, q, q, normalizer="sigmoid")
    assert w_sigmoid is not None  # no online form: dense at any length
