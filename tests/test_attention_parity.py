"""What jax.nn and PyTorch users expect: grouped-query heads, causal alignment, two-sided windows,
lengths, dropout, RoPE conventions. Each against an independent reference, gradients included."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tinytf import attention as A
from tinytf.cache import KVCache
from tinytf.nn import MultiHeadAttention
from tinytf.positional import apply_rope
from tinytf.variants import AttentionConfig

B, T, S, N, H = 2, 5, 7, 6, 4


def qkv(seed, T=T, S=S, N=N, K=N, H=H):
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    return (jax.random.normal(k1, (B, T, N, H)), jax.random.normal(k2, (B, S, K, H)),
            jax.random.normal(k3, (B, S, K, H)))


def numpy_attention(q, k, v, mask):
    """Plain float64 reference with key/value heads repeated to the query heads."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    G = q.shape[2] // k.shape[2]
    k, v = np.repeat(k, G, axis=2), np.repeat(v, G, axis=2)
    logits = np.einsum("btnh,bsnh->bnts", q, k) / np.sqrt(q.shape[-1])
    mask = np.broadcast_to(np.asarray(mask, bool), logits.shape)
    logits = np.where(mask, logits, -np.inf)
    m = np.max(logits, -1, keepdims=True)
    e = np.where(mask, np.exp(logits - np.where(np.isfinite(m), m, 0)), 0.0)
    d = e.sum(-1, keepdims=True)
    w = np.where(d > 0, e / np.where(d > 0, d, 1), 0.0)
    return np.einsum("bnts,bsnh->btnh", w, v), w


# ------------------------------------------------------------------ grouped-query attention
@pytest.mark.parametrize("K", [1, 2, 3, 6])
def test_grouped_query_matches_jax_nn_and_numpy(K):
    q, k, v = qkv(0, K=K)
    out, w = A.dot_product_attention(q, k, v, is_causal=True, causal_alignment="top_left")
    ref = jax.nn.dot_product_attention(q, k, v, is_causal=True)
    np.testing.assert_allclose(out, ref, atol=2e-5)
    mask = np.tril(np.ones((T, S), bool))[None, None]
    ref_out, ref_w = numpy_attention(q, k, v, mask)
    np.testing.assert_allclose(out, ref_out, atol=2e-5)
    np.testing.assert_allclose(w, ref_w, atol=2e-6)
    chunked, _ = A.dot_product_attention(q, k, v, is_causal=True, causal_alignment="top_left", chunk_size=3)
    np.testing.assert_allclose(chunked, out, atol=2e-5)


def test_grouped_query_gradients_equal_repeated_heads():
    q, k, v = qkv(1, K=2)

    def grouped(q, k, v):
        return (A.dot_product_attention(q, k, v, is_causal=True)[0] ** 2).sum()

    def repeated(q, k, v):  # the same maths with the key/value heads copied: gradients sum over copies
        k, v = jnp.repeat(k, 3, axis=2), jnp.repeat(v, 3, axis=2)
        return (A.dot_product_attention(q, k, v, is_causal=True)[0] ** 2).sum()

    for got, want in zip(jax.grad(grouped, (0, 1, 2))(q, k, v), jax.grad(repeated, (0, 1, 2))(q, k, v)):
        np.testing.assert_allclose(got, want, atol=1e-4)
    chunked = lambda q, k, v: (A.dot_product_attention(q, k, v, is_causal=True, chunk_size=2)[0] ** 2).sum()  # noqa: E731
    for got, want in zip(jax.grad(chunked, (0, 1, 2))(q, k, v), jax.grad(grouped, (0, 1, 2))(q, k, v)):
        np.testing.assert_allclose(got, want, atol=1e-4)


def test_grouped_query_needs_a_divisor():
    q, k, v = qkv(2, K=4)
    with pytest.raises(ValueError, match=r"K key/value heads dividing N=6"):
        A.dot_product_attention(q, k, v)
    with pytest.raises(ValueError, match="num_kv_heads=4 must divide num_heads=6"):
        MultiHeadAttention(24, 6, config=AttentionConfig(num_kv_heads=4), rngs=nnx.Rngs(0))


def test_mha_with_kv_heads_has_smaller_projections_and_cache():
    mha = MultiHeadAttention(24, 6, config=AttentionConfig(num_kv_heads=2), rngs=nnx.Rngs(0))
    assert mha.key_proj.kernel.shape == (24, 8) and mha.value_proj.kernel.shape == (24, 8)
    cache = mha.init_cache(B, 9)
    assert cache.keys.shape == (B, 9, 2, 4)  # K = 2 heads stored, not 6
    x = jax.random.normal(jax.random.key(3), (B, 9, 24))
    full = mha(x, is_causal=True)
    # decoding the same 9 tokens through the cache in one parallel step gives the same outputs
    mask = jnp.tril(jnp.ones((9, 9), bool))[None, None]
    pos = jnp.arange(9)
    dec, new = mha(x, mask=mask, positions=pos, context_positions=pos, cache=KVCache.zeros(B, 9, 2, 4),
                   cache_slots=pos)
    np.testing.assert_allclose(dec, full, atol=1e-5)
    assert new.keys.shape == (B, 9, 2, 4)


# -------------------------------------------------------------------------- causal alignment
@pytest.mark.parametrize("T_, S_", [(5, 7), (7, 5), (4, 4)])
def test_top_left_causal_matches_jax_nn(T_, S_):
    q, k, v = qkv(4, T=T_, S=S_)
    ref = jax.nn.dot_product_attention(q, k, v, is_causal=True)
    out, w = A.dot_product_attention(q, k, v, is_causal=True, causal_alignment="top_left")
    keep = np.asarray(np.tril(np.ones((T_, S_), bool)).any(-1))  # rows that see a key (jax.nn averages empty rows)
    np.testing.assert_allclose(np.asarray(out)[:, keep], np.asarray(ref)[:, keep], atol=2e-5)
    np.testing.assert_allclose(out, numpy_attention(q, k, v, np.tril(np.ones((T_, S_), bool))[None, None])[0],
                               atol=2e-5)
    chunked, _ = A.dot_product_attention(q, k, v, is_causal=True, causal_alignment="top_left", chunk_size=2)
    np.testing.assert_allclose(chunked, out, atol=2e-5)


def test_bottom_right_is_the_default_and_matches_the_shifted_mask():
    q, k, v = qkv(5)
    mask = np.arange(S)[None, :] <= np.arange(T)[:, None] + (S - T)  # query i at position i + S - T
    out, _ = A.dot_product_attention(q, k, v, is_causal=True)
    np.testing.assert_allclose(out, numpy_attention(q, k, v, mask[None, None])[0], atol=2e-5)
    np.testing.assert_array_equal(A.causal_mask(T, S)[0, 0], mask)
    np.testing.assert_array_equal(A.causal_mask(T, S, alignment="top_left")[0, 0], np.tril(np.ones((T, S), bool)))
    with pytest.raises(ValueError, match="causal_alignment must be one of"):
        A.dot_product_attention(q, k, v, is_causal=True, causal_alignment="left")


def test_ssmax_counts_follow_the_alignment_on_every_path():
    q, k, v = qkv(6)
    for align in ("top_left", "bottom_right"):
        dense, _ = A.dot_product_attention(q, k, v, is_causal=True, causal_alignment=align, normalizer="ssmax")
        chunked, _ = A.dot_product_attention(q, k, v, is_causal=True, causal_alignment=align, normalizer="ssmax",
                                             chunk_size=3)
        np.testing.assert_allclose(chunked, dense, atol=2e-5)


# ------------------------------------------------------------------------ two-sided windows
def test_two_sided_window_matches_jax_nn_local_window_size():
    q, k, v = qkv(7, T=9, S=9)
    ref = jax.nn.dot_product_attention(q, k, v, local_window_size=(2, 1))
    out, w = A.dot_product_attention(q, k, v, window=(2, 1))
    np.testing.assert_allclose(out, ref, atol=2e-5)
    i, j = np.arange(9)[:, None], np.arange(9)[None, :]
    assert np.all(np.asarray(w)[..., ~((j >= i - 2) & (j <= i + 1))] == 0)
    np.testing.assert_array_equal(A.local_window_mask(9, 2, 1)[0, 0], (j >= i - 2) & (j <= i + 1))
    chunked, _ = A.dot_product_attention(q, k, v, window=(2, 1), chunk_size=4)
    np.testing.assert_allclose(chunked, out, atol=2e-5)
    causal_window, _ = A.dot_product_attention(q, k, v, window=(2, 1), is_causal=True)
    int_window, _ = A.dot_product_attention(q, k, v, window=3)  # W = 3: the last 3 keys = (2, 0) and causal
    np.testing.assert_allclose(causal_window, int_window, atol=1e-6)


def test_two_sided_window_in_an_encoder_layer():
    mha = MultiHeadAttention(12, 3, config=AttentionConfig(window=(1, 1)), rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(8), (1, 6, 12))
    y = mha(x)
    x2 = x.at[:, 5].add(10.0)  # token 5 is outside the window of tokens 0..3
    np.testing.assert_allclose(mha(x2)[:, :4], y[:, :4], atol=1e-5)
    assert not np.allclose(mha(x2)[:, 4], y[:, 4])


# ---------------------------------------------------------------------------------- lengths
def test_lengths_match_jax_nn_and_zero_padded_queries():
    q, k, v = qkv(9)
    ql, kl = jnp.array([3, 5]), jnp.array([7, 2])
    ref = jax.nn.dot_product_attention(q, k, v, query_seq_lengths=ql, key_value_seq_lengths=kl)
    out, w = A.dot_product_attention(q, k, v, query_lengths=ql, key_lengths=kl)
    np.testing.assert_allclose(out, ref, atol=2e-5)  # jax.nn zeroes padded queries too
    assert np.all(np.asarray(out)[0, 3:] == 0) and np.all(np.asarray(w)[1, :, :, 2:] == 0)
    chunked, _ = A.dot_product_attention(q, k, v, query_lengths=ql, key_lengths=kl, chunk_size=3)
    np.testing.assert_allclose(chunked, out, atol=2e-5)
    grads = jax.grad(lambda q: A.dot_product_attention(q, k, v, query_lengths=ql, key_lengths=jnp.array([0, 2]),
                                                       chunk_size=3)[0].sum())(q)
    assert np.all(np.isfinite(grads))  # example 0 sees no key at all: zeros, finite gradients
    with pytest.raises(ValueError, match=r"key_lengths must be a \(B,\)=\(2,\) integer array"):
        A.dot_product_attention(q, k, v, key_lengths=jnp.array([1.0, 2.0]))


# ---------------------------------------------------------------------------------- dropout
def test_dropout_same_key_same_mask_and_unbiased():
    q, k, v = qkv(10)
    plain, w = A.dot_product_attention(q, k, v)
    key = jax.random.key(11)
    a, wa = A.dot_product_attention(q, k, v, dropout_rate=0.3, dropout_key=key)
    b, _ = A.dot_product_attention(q, k, v, dropout_rate=0.3, dropout_key=key)
    c, _ = A.dot_product_attention(q, k, v, dropout_rate=0.3, dropout_key=jax.random.key(12))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    kept = np.asarray(wa) > 0
    assert 0.6 < kept.mean() < 0.8  # ~70 % of the weights survive
    np.testing.assert_allclose(np.asarray(wa)[kept], (np.asarray(w) / 0.7)[kept], rtol=1e-5)  # inverted dropout
    many = jnp.stack([A.dot_product_attention(q, k, v, dropout_rate=0.3, dropout_key=jax.random.key(i))[1]
                      for i in range(400)]).mean(0)
    np.testing.assert_allclose(many, w, atol=0.05)  # unbiased on average
    ch1, _ = A.dot_product_attention(q, k, v, dropout_rate=0.3, dropout_key=key, chunk_size=3)
    ch2, _ = A.dot_product_attention(q, k, v, dropout_rate=0.3, dropout_key=key, chunk_size=3)
    np.testing.assert_array_equal(ch1, ch2)
    np.testing.assert_allclose(A.dot_product_attention(q, k, v, dropout_rate=0.0)[0], plain)
    with pytest.raises(ValueError, match="needs dropout_key"):
        A.dot_product_attention(q, k, v, dropout_rate=0.1)
    with pytest.raises(ValueError, match=r"dropout_rate must be a number in \[0, 1\)"):
        A.dot_product_attention(q, k, v, dropout_rate=1.0, dropout_key=key)


def test_mha_dropout_trains_and_is_off_in_eval():
    cfg = AttentionConfig(dropout_rate=0.5)
    mha = MultiHeadAttention(12, 3, config=cfg, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(13), (2, 5, 12))
    first, second = mha(x), mha(x)  # the RNG stream advances: a new mask each call
    assert not np.allclose(first, second)
    again = MultiHeadAttention(12, 3, config=cfg, rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(again(x), first)  # same seed, same mask
    mha.eval()
    plain = MultiHeadAttention(12, 3, rngs=nnx.Rngs(0))
    np.testing.assert_allclose(mha(x), plain(x), atol=1e-6)  # eval: no dropout, same parameters
    mha.train()
    assert not np.allclose(mha(x), plain(x))


def test_fit_trains_a_model_with_attention_dropout():
    from tinytf.train import fit

    model = MultiHeadAttention(12, 3, config=AttentionConfig(dropout_rate=0.2), rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(14), (4, 5, 12))
    history = fit(model, lambda key: x, steps=6, loss_fn=lambda m, b: ((m(b) - b) ** 2).mean(), progress=False)
    assert np.all(np.isfinite(history["loss"])) and history["loss"][-1] < history["loss"][0]


# ---------------------------------------------------------------------------------- RoPE
def rotate_numpy(x, positions, pairs, base=10000.0):
    """Rotate each channel pair (a, b) of x (B, T, N, H) by position * base^(-2i/R), i the pair's index."""
    x = np.asarray(x, np.float64).copy()
    R = 2 * len(pairs)
    out = x.copy()
    for i, (a, b) in enumerate(pairs):
        angle = np.asarray(positions, np.float64)[:, None] * base ** (-2 * i / R)  # (T, 1)
        c, s = np.cos(angle), np.sin(angle)
        out[..., a] = x[..., a] * c - x[..., b] * s
        out[..., b] = x[..., a] * s + x[..., b] * c
    return out


def test_rope_styles_against_explicit_rotations():
    x = jax.random.normal(jax.random.key(15), (1, 5, 3, 8))
    pos = np.arange(5) * 1.5
    interleaved = [(2 * i, 2 * i + 1) for i in range(4)]
    halves = [(i, i + 4) for i in range(4)]
    np.testing.assert_allclose(apply_rope(x, pos), rotate_numpy(x, pos, interleaved), atol=1e-5)
    np.testing.assert_allclose(apply_rope(x, pos, style="halves"), rotate_numpy(x, pos, halves), atol=1e-5)
    assert not np.allclose(apply_rope(x, pos, style="halves"), apply_rope(x, pos))  # not interchangeable


def test_partial_rotary_and_position_scaling():
    x = jax.random.normal(jax.random.key(16), (1, 5, 3, 8))
    pos = np.arange(5)
    part = apply_rope(x, pos, fraction=0.5)  # rotate 4 of 8 channels
    np.testing.assert_allclose(part[..., 4:], x[..., 4:])  # the rest passes through
    np.testing.assert_allclose(part, rotate_numpy(x, pos, [(0, 1), (2, 3)]), atol=1e-5)
    part_h = apply_rope(x, pos, fraction=0.5, style="halves")
    np.testing.assert_allclose(part_h, rotate_numpy(x, pos, [(0, 2), (1, 3)]), atol=1e-5)
    np.testing.assert_allclose(apply_rope(x, pos, scale=0.25), apply_rope(x, pos * 0.25), atol=1e-6)
    q, k = jax.random.normal(jax.random.key(17), (2, 1, 4, 1, 8))
    for style in ("interleaved", "halves"):  # relative: shifting all positions leaves q.k unchanged
        a = jnp.einsum("btnh,bsnh->bts", apply_rope(q, np.arange(4), style=style), apply_rope(k, np.arange(4),
                                                                                               style=style))
        b = jnp.einsum("btnh,bsnh->bts", apply_rope(q, np.arange(4) + 7, style=style),
                       apply_rope(k, np.arange(4) + 7, style=style))
        np.testing.assert_allclose(a, b, atol=1e-4)
    with pytest.raises(ValueError, match="style must be one of"):
        apply_rope(x, pos, style="neox")
    with pytest.raises(ValueError, match=r"rope fraction must be in \(0, 1\]"):
        apply_rope(x, pos, fraction=0.0)


def test_mha_uses_the_configured_rope():
    x = jax.random.normal(jax.random.key(18), (1, 6, 16))
    a = MultiHeadAttention(16, 2, config=AttentionConfig(position="rope"), rngs=nnx.Rngs(0))
    b = MultiHeadAttention(16, 2, config=AttentionConfig(position="rope", rope_style="halves"), rngs=nnx.Rngs(0))
    c = MultiHeadAttention(16, 2, config=AttentionConfig(position="rope", rope_scale=0.5), rngs=nnx.Rngs(0))
    assert not np.allclose(a(x, is_causal=True), b(x, is_causal=True))
    np.testing.assert_allclose(c(x, is_causal=True), a(x, is_causal=True, positions=jnp.arange(6) * 0.5),
                               atol=1e-5)


def test_language_model_with_grouped_query_heads_generates_as_it_recomputes():
    from tinytf.models import CausalLM, LMConfig

    cfg = LMConfig(vocab_size=13, d_model=24, num_layers=2, num_heads=6, max_len=16, position="rope",
                   attention=AttentionConfig(num_kv_heads=2))
    model = CausalLM(cfg, rngs=nnx.Rngs(0))
    assert model.init_cache(1, 9)[0].keys.shape == (1, 9, 2, 4)  # the cache holds K = 2 heads
    prompt = jax.random.randint(jax.random.key(19), (2, 4), 0, 13)
    out = np.asarray(model.generate(prompt, 6))
    seq = np.asarray(prompt)
    forward = nnx.jit(lambda m, tokens: m(tokens))  # one program per length, not hundreds of eager ops
    for _ in range(6):  # greedy by recomputing the whole sequence each time
        seq = np.concatenate([seq, np.asarray(forward(model, jnp.asarray(seq))[:, -1].argmax(-1))[:, None]], axis=1)
    np.testing.assert_array_equal(out, seq)


def test_vit_with_a_two_sided_window():
    from tinytf.models import ViT, ViTConfig

    model = ViT(ViTConfig.tiny16(num_classes=3, attention=AttentionConfig(window=(2, 2))), rngs=nnx.Rngs(0))
    assert model(jnp.ones((2, 16, 16, 3))).shape == (2, 3)
