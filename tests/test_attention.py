"""tinytf.attention against independent references: plain numpy, jax.nn, finite differences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads

from tinytf import attention as A

B, T, S, N, H = 2, 5, 7, 3, 11  # odd, distinct: a transposed axis cannot pass


def qkv(seed=0, T=T, S=S, dtype=jnp.float32):
    k = jax.random.split(jax.random.key(seed), 3)
    return (jax.random.normal(k[0], (B, T, N, H), dtype), jax.random.normal(k[1], (B, S, N, H), dtype),
            jax.random.normal(k[2], (B, S, N, H), dtype))


# ------------------------------------------------------------------ numpy reference
def np_attention(q, k, v, mask=None, bias=None, normalizer="softmax", sink=None, scale=None):
    """Loop-free but independent float64 reference: logits, then a per-row normalizer."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    scale = 1 / np.sqrt(q.shape[-1]) if scale is None else scale
    logits = np.einsum("btnh,bsnh->bnts", q, k) * scale
    if bias is not None:
        logits = logits + np.asarray(bias, np.float64)
    m = np.ones(logits.shape, bool) if mask is None else np.broadcast_to(np.asarray(mask), logits.shape)
    w = np.zeros_like(logits)
    for idx in np.ndindex(*logits.shape[:3]):
        x, ok = logits[idx], m[idx]
        if not ok.any():
            continue
        n = ok.sum()
        if normalizer == "softmax" and sink is None:
            e = np.exp(x[ok] - x[ok].max())
            w[idx][ok] = e / e.sum()
        elif normalizer == "softmax1" or sink is not None:
            b = 0.0 if sink is None else float(np.asarray(sink).reshape(-1)[idx[1]] if np.ndim(sink) else sink)
            e = np.exp(x[ok])
            w[idx][ok] = e / (np.exp(b) + e.sum())
        elif normalizer == "ssmax":
            z = x[ok] * np.log(n)
            e = np.exp(z - z.max())
            w[idx][ok] = e / e.sum()
        elif normalizer == "sigmoid":
            w[idx][ok] = 1 / (1 + np.exp(-(x[ok] - np.log(n))))
    return np.einsum("bnts,bsnh->btnh", w, v), w


def random_mask(seed, shape=(B, 1, T, S), p=0.6):
    return jax.random.bernoulli(jax.random.key(seed), p, shape)


@pytest.mark.parametrize("normalizer", ["softmax", "softmax1", "ssmax", "sigmoid"])
@pytest.mark.parametrize("masked", [False, True])
def test_matches_numpy(normalizer, masked):
    q, k, v = qkv(1)
    mask = random_mask(2) if masked else None
    out, w = A.dot_product_attention(q, k, v, mask, normalizer=normalizer)
    ref_out, ref_w = np_attention(q, k, v, mask, normalizer=normalizer)
    np.testing.assert_allclose(w, ref_w, atol=2e-6)
    np.testing.assert_allclose(out, ref_out, atol=2e-5)
    assert out.shape == (B, T, N, H) and w.shape == (B, N, T, S)


def test_matches_jax_nn_with_mask_and_bias():
    q, k, v = qkv(3)
    mask = random_mask(4, (B, N, T, S), 0.8)
    bias = jax.random.normal(jax.random.key(5), (1, N, T, S))
    out, _ = A.dot_product_attention(q, k, v, mask, bias=bias, scale=0.37)
    ref = jax.nn.dot_product_attention(q, k, v, bias=bias, mask=mask, scale=0.37)
    ok_rows = np.asarray(mask).any(-1)  # jax.nn gives mean(v) on fully masked rows, we give 0
    np.testing.assert_allclose(np.where(ok_rows.transpose(0, 2, 1)[..., None], out, 0),
                               np.where(ok_rows.transpose(0, 2, 1)[..., None], ref, 0), atol=2e-5)


def test_default_scale_is_inverse_sqrt_head_dim():
    q, k, v = qkv(6)
    out, _ = A.dot_product_attention(q, k, v)
    out2, _ = A.dot_product_attention(q, k, v, scale=1 / np.sqrt(H))
    out3, _ = A.dot_product_attention(q, k, v, scale=1.0)
    np.testing.assert_allclose(out, out2, atol=1e-6)
    assert np.abs(out - out3).max() > 1e-3


def test_sink_logit_matches_numpy_and_softmax1_is_sink_zero():
    q, k, v = qkv(7)
    sink = jnp.array([0.3, -2.0, 1.5])
    out, w = A.dot_product_attention(q, k, v, sink=sink)
    ref_out, ref_w = np_attention(q, k, v, sink=np.asarray(sink))
    np.testing.assert_allclose(w, ref_w, atol=2e-6)
    np.testing.assert_allclose(out, ref_out, atol=2e-5)
    a, _ = A.dot_product_attention(q, k, v, normalizer="softmax1")
    b, _ = A.dot_product_attention(q, k, v, sink=0.0)
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_softmax1_is_stable_for_huge_logits():
    logits = jnp.array([[1000.0, 999.0, -1000.0]])
    w = A.softmax1(logits)
    assert np.isfinite(w).all()
    e = np.exp(np.array([0.0, -1.0, -2000.0]))
    np.testing.assert_allclose(w[0], e / (np.exp(-1000.0) + e.sum()), rtol=1e-6)
    tiny = A.softmax1(jnp.array([[-1000.0, -1000.0]]))  # everything goes to the "null" key
    np.testing.assert_allclose(tiny, 0.0, atol=1e-30)


def test_callable_normalizer():
    q, k, v = qkv(8)
    hardmax = lambda logits, mask: jax.nn.one_hot(jnp.argmax(logits, -1), logits.shape[-1])
    out, w = A.dot_product_attention(q, k, v, normalizer=hardmax)
    np.testing.assert_allclose(w.sum(-1), 1.0)
    idx = np.asarray(jnp.argmax(w, -1))  # (B, N, T)
    expected = np.take_along_axis(np.asarray(v).transpose(0, 2, 1, 3), idx[..., None], axis=2)  # (B, N, T, H)
    np.testing.assert_allclose(out, expected.transpose(0, 2, 1, 3), atol=1e-6)


# ----------------------------------------------------------------- fully masked rows
@pytest.mark.parametrize("normalizer", ["softmax", "softmax1", "ssmax", "sigmoid"])
def test_fully_masked_row_gives_zeros_and_finite_grads(normalizer):
    q, k, v = qkv(9)
    mask = np.ones((B, 1, T, S), bool)
    mask[0, 0, 2, :] = False  # query 2 of batch 0 sees nothing
    mask = jnp.asarray(mask)
    out, w = A.dot_product_attention(q, k, v, mask, normalizer=normalizer)
    assert np.all(np.asarray(w)[0, :, 2] == 0) and np.all(np.asarray(out)[0, 2] == 0)
    grads = jax.grad(lambda q, k, v: A.dot_product_attention(q, k, v, mask, normalizer=normalizer)[0].sum(),
                     argnums=(0, 1, 2))(q, k, v)
    assert all(np.isfinite(g).all() for g in grads)
    assert np.all(np.asarray(grads[0])[0, 2] == 0)  # the masked query cannot matter
    for chunk in ([4] if normalizer != "sigmoid" else []):
        oc, _ = A.dot_product_attention(q, k, v, mask, normalizer=normalizer, chunk_size=chunk)
        np.testing.assert_allclose(oc, out, atol=1e-5)
        g = jax.grad(lambda q: A.dot_product_attention(q, k, v, mask, normalizer=normalizer,
                                                       chunk_size=chunk)[0].sum())(q)
        assert np.isfinite(g).all()


@pytest.mark.parametrize("normalizer", ["softmax", "softmax1", "ssmax"])
def test_gradients_match_finite_differences(normalizer):
    q, k, v = qkv(10, dtype=jnp.float32)
    q, k, v = (x.astype(jnp.float64) if jax.config.jax_enable_x64 else x for x in (q, k, v))
    mask = random_mask(11)
    f = lambda q, k, v: A.dot_product_attention(q, k, v, mask, normalizer=normalizer)[0]
    check_grads(f, (q, k, v), order=1, modes=("rev",), atol=3e-2, rtol=3e-2, eps=1e-2)
    fc = lambda q, k, v: A.dot_product_attention(q, k, v, mask, normalizer=normalizer, chunk_size=3)[0]
    check_grads(fc, (q, k, v), order=1, modes=("rev",), atol=3e-2, rtol=3e-2, eps=1e-2)


# ---------------------------------------------------------------- flash (chunk_size = tile)
@pytest.mark.parametrize("chunk", [1, 3, 7, 64])
@pytest.mark.parametrize("normalizer", ["softmax", "softmax1", "ssmax"])
def test_chunked_equals_dense(chunk, normalizer):
    q, k, v = qkv(12, T=6, S=13)
    mask = random_mask(13, (B, 1, 6, 13), 0.7)
    bias = jax.random.normal(jax.random.key(14), (1, N, 6, 13))
    dense, _ = A.dot_product_attention(q, k, v, mask, bias=bias, normalizer=normalizer)
    chunked, w = A.dot_product_attention(q, k, v, mask, bias=bias, normalizer=normalizer, chunk_size=chunk)
    assert w is None
    np.testing.assert_allclose(chunked, dense, atol=1e-5)
    gd = jax.grad(lambda q: (A.dot_product_attention(q, k, v, mask, bias=bias, normalizer=normalizer)[0] ** 2).sum())(q)
    gc = jax.grad(lambda q: (A.dot_product_attention(q, k, v, mask, bias=bias, normalizer=normalizer,
                                                     chunk_size=chunk)[0] ** 2).sum())(q)
    np.testing.assert_allclose(gc, gd, atol=1e-4)


@pytest.mark.parametrize("window", [None, 3])
def test_structured_causal_and_window_equal_explicit_masks(window):
    q, k, v = qkv(15, T=5, S=9)  # queries are the last 5 of 9 positions
    explicit = A.sliding_window_mask(5, window, 9) if window else A.causal_mask(5, 9)
    ref, _ = A.dot_product_attention(q, k, v, explicit)
    for chunk in (None, 2):
        out, _ = A.dot_product_attention(q, k, v, is_causal=True, window=window, chunk_size=chunk)
        np.testing.assert_allclose(out, ref, atol=1e-5)


def _temp_bytes(fn, T, H=8):
    shape = jax.ShapeDtypeStruct((1, T, 1, H), jnp.float32)
    return jax.jit(fn).lower(shape, shape, shape).compile().memory_analysis().temp_size_in_bytes


def test_flash_memory_is_linear_where_dense_would_not_fit():
    """At T = S = 16384 one head's score matrix alone is 1 GiB of float32.

    XLA's memory analysis of the compiled programs (no run needed) shows jax.nn's dense
    working set growing 4x per doubling of T, and flash's (forward and backward) growing
    2x and staying under a modest 256 MiB budget; then the flash path really runs there.
    """
    dense = lambda q, k, v: jax.nn.dot_product_attention(q, k, v)
    chunked = lambda q, k, v: A.dot_product_attention(q, k, v, is_causal=True, chunk_size=512)[0]
    chunked_grad = jax.grad(lambda q, k, v: A.dot_product_attention(q, k, v, chunk_size=512)[0].sum())
    T = 16384
    budget = 256 * 2**20
    d1, d2 = _temp_bytes(dense, T // 2), _temp_bytes(dense, T)
    c1, c2 = _temp_bytes(chunked, T // 2), _temp_bytes(chunked, T)
    g1, g2 = _temp_bytes(chunked_grad, T // 2), _temp_bytes(chunked_grad, T)
    assert d2 >= T * T * 4 and d2 / d1 > 3.5  # quadratic: the (T, S) matrix is materialised
    assert c2 / c1 < 2.5 and g2 / g1 < 2.5  # linear, forward and backward
    assert c2 < budget and g2 < budget < d2
    q = jax.random.normal(jax.random.key(0), (1, T, 1, 8))
    out = jax.jit(chunked)(q, q, q)
    assert out.shape == (1, T, 1, 8) and bool(jnp.isfinite(out).all())
    # causal: query 0 sees only key 0, so its output is exactly v[0]
    np.testing.assert_allclose(out[0, 0], q[0, 0], rtol=1e-6)


def test_bfloat16_inputs_accumulate_in_float32():
    q, k, v = qkv(16)
    out32, w32 = A.dot_product_attention(q, k, v)
    qb, kb, vb = (x.astype(jnp.bfloat16) for x in (q, k, v))
    out, w = A.dot_product_attention(qb, kb, vb)
    assert out.dtype == jnp.bfloat16 and w.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(w).sum(-1), 1.0, atol=1e-5)  # rows still sum to 1
    np.testing.assert_allclose(np.asarray(out, np.float32), out32, atol=0.1)
    outc, _ = A.dot_product_attention(qb, kb, vb, chunk_size=3)
    assert outc.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(outc, np.float32), out32, atol=0.1)


# ---------------------------------------------------------------------------- masks
def test_mask_helpers():
    np.testing.assert_array_equal(A.causal_mask(3)[0, 0], np.tril(np.ones((3, 3), bool)))
    np.testing.assert_array_equal(A.causal_mask(2, 4)[0, 0], [[1, 1, 1, 0], [1, 1, 1, 1]])
    np.testing.assert_array_equal(A.padding_mask(jnp.array([1, 3]), 4)[:, 0, 0],
                                  [[1, 0, 0, 0], [1, 1, 1, 0]])
    np.testing.assert_array_equal(A.sliding_window_mask(4, 2)[0, 0],
                                  [[1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]])
    both = A.combine_masks(A.causal_mask(4), None, A.padding_mask(jnp.array([3]), 4))
    np.testing.assert_array_equal(both[0, 0], np.tril(np.ones((4, 4), bool)) & [1, 1, 1, 0])
    assert A.combine_masks(None, None) is None


def test_masked_keys_carry_no_information():
    q, k, v = qkv(17)
    columns = jnp.array([True, False, True, True, False, True, False])  # keys 1, 4, 6 hidden from all
    mask = random_mask(18) & columns
    out, _ = A.dot_product_attention(q, k, v, mask)
    noise = jax.random.normal(jax.random.key(19), k.shape) * 100
    blocked = ~np.asarray(mask)[:, 0].any(axis=1)  # (B, S): keys no query may see
    assert blocked.any()
    sel = jnp.asarray(blocked)[:, :, None, None]
    out2, _ = A.dot_product_attention(q, jnp.where(sel, k + noise, k), jnp.where(sel, v + noise, v), mask)
    np.testing.assert_allclose(out2, out, atol=1e-5)
    # a causal mask: perturbing the last key/value changes nothing before the last query
    out3, _ = A.dot_product_attention(q[:, :5], k[:, :5].at[:, -1].add(5.0), v[:, :5].at[:, -1].add(5.0),
                                      is_causal=True)
    out4, _ = A.dot_product_attention(q[:, :5], k[:, :5], v[:, :5], is_causal=True)
    np.testing.assert_allclose(out3[:, :4], out4[:, :4], atol=1e-6)
    assert np.abs(out3[:, 4] - out4[:, 4]).max() > 1e-3


@settings(max_examples=25, deadline=None)
@given(perm_seed=st.integers(0, 10_000))
def test_permutation_equivariance_without_positions(perm_seed):
    q, k, v = qkv(20, T=S)
    perm = np.random.default_rng(perm_seed).permutation(S)
    out, _ = A.dot_product_attention(q, k, v)
    out_p, _ = A.dot_product_attention(q[:, perm], k[:, perm], v[:, perm])
    np.testing.assert_allclose(out_p, out[:, perm], atol=1e-5)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), normalizer=st.sampled_from(["softmax", "ssmax"]))
def test_rows_sum_to_one_where_anything_is_visible(seed, normalizer):
    logits = jax.random.normal(jax.random.key(seed), (3, 5, 7)) * 10
    mask = jax.random.bernoulli(jax.random.key(seed + 1), 0.5, (3, 5, 7))
    w = np.asarray(A.get_normalizer(normalizer)(logits, mask))
    any_visible = np.asarray(mask).any(-1)
    np.testing.assert_allclose(w.sum(-1)[any_visible], 1.0, atol=1e-5)
    assert np.all(w.sum(-1)[~any_visible] == 0) and np.all(w[~np.asarray(mask)] == 0)


# ----------------------------------------------------------------------- bad inputs
def test_bad_inputs_raise_clear_errors():
    q, k, v = qkv(21)
    with pytest.raises(ValueError, match=r"key shape \(2, 7, 3, 5\) does not match query shape \(2, 5, 3, 11\)"):
        A.dot_product_attention(q, k[..., :5], v)
    with pytest.raises(ValueError, match=r"value shape .* does not match key shape"):
        A.dot_product_attention(q, k, v[:, :4])
    with pytest.raises(ValueError, match=r"query must have shape \(B, T\|S, N, H\), got query.shape=\(5, 3, 11\)"):
        A.dot_product_attention(q[0], k, v)
    with pytest.raises(ValueError, match="share a dtype"):
        A.dot_product_attention(q.astype(jnp.bfloat16), k, v)
    with pytest.raises(ValueError, match=r"mask of shape \(2, 1, 5, 4\) is not broadcastable to \(B, N, T, S\) = \(2, 3, 5, 7\)"):
        A.dot_product_attention(q, k, v, jnp.ones((2, 1, 5, 4), bool))
    with pytest.raises(ValueError, match="mask must be boolean"):
        A.dot_product_attention(q, k, v, jnp.ones((1, 1, 5, 7)))
    with pytest.raises(ValueError, match="bias of shape"):
        A.dot_product_attention(q, k, v, bias=jnp.ones((3, 5, 8)))
    with pytest.raises(ValueError, match="normalizer must be one of"):
        A.dot_product_attention(q, k, v, normalizer="sofmax")
    with pytest.raises(ValueError, match="flash attention supports"):
        A.dot_product_attention(q, k, v, normalizer="sigmoid", chunk_size=4)
    with pytest.raises(ValueError, match=r"sink must be a scalar or have shape \(N,\)"):
        A.dot_product_attention(q, k, v, sink=jnp.zeros(4))
    with pytest.raises(ValueError, match="needs a GPU"):
        A.dot_product_attention(q, k, v, implementation="cudnn")
    with pytest.raises(ValueError, match=r"lengths must be a \(B,\) integer array"):
        A.padding_mask(jnp.ones((2, 2), int), 4)
