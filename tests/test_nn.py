"""NNX layers: MultiHeadAttention against flax.nnx's own, variants, Block switches, capture_attention."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tinytf import attention as A
from tinytf.capture import capture_attention
from tinytf.nn import Block, Decoder, Encoder, HeadGate, MultiHeadAttention
from tinytf.variants import VARIANTS, AttentionConfig, get_variant, register_variant

D, N, T, S = 12, 3, 5, 7


def x_and_context(seed=0):
    k1, k2 = jax.random.split(jax.random.key(seed))
    return jax.random.normal(k1, (2, T, D)), jax.random.normal(k2, (2, S, D))


def test_mha_matches_flax_nnx_multihead_attention():
    x, ctx = x_and_context()
    ours = MultiHeadAttention(D, N, rngs=nnx.Rngs(0))
    theirs = nnx.MultiHeadAttention(num_heads=N, in_features=D, qkv_features=D, out_features=D,
                                    decode=False, rngs=nnx.Rngs(1))
    H = D // N
    for name, proj in (("query", ours.query_proj), ("key", ours.key_proj), ("value", ours.value_proj)):
        getattr(theirs, name).kernel[...] = proj.kernel[...].reshape(D, N, H)
        getattr(theirs, name).bias[...] = proj.bias[...].reshape(N, H)
    theirs.out.kernel[...] = ours.out_proj.kernel[...].reshape(N, H, D)
    theirs.out.bias[...] = ours.out_proj.bias[...]
    mask = A.causal_mask(T, S)
    np.testing.assert_allclose(ours(x, ctx, mask=mask), theirs(x, ctx, ctx, mask=mask), atol=1e-5)


def test_query_and_key_positions_do_not_touch_values():
    x, ctx = x_and_context(1)
    mha = MultiHeadAttention(D, N, rngs=nnx.Rngs(0))
    pos = jax.random.normal(jax.random.key(2), ctx.shape)
    y = mha(x, ctx, key_pos=pos)
    q = mha._heads(mha.query_proj(x))
    k = mha._heads(mha.key_proj(ctx + pos))
    v = mha._heads(mha.value_proj(ctx))  # values from the context *without* positions
    out, _ = A.dot_product_attention(q, k, v)
    np.testing.assert_allclose(y, mha.out_proj(out.reshape(2, T, D)), atol=1e-5)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_every_variant_runs_forward_and_backward_under_jit(name):
    cfg = get_variant(name, base=AttentionConfig(position="rope"))
    block = Block(D + 4, 4, attention=cfg, rngs=nnx.Rngs(0))  # D=16: even head dim for RoPE
    x = jax.random.normal(jax.random.key(3), (2, 9, D + 4))
    graphdef, params, rest = nnx.split(block, nnx.Param, ...)

    @jax.jit
    def loss(params, x):
        return (nnx.merge(graphdef, params, rest)(x, is_causal=True) ** 2).mean()

    value, grads = jax.jit(jax.value_and_grad(loss))(params, x)
    assert np.isfinite(value)
    leaves = jax.tree.leaves(grads)
    assert leaves and all(np.isfinite(g).all() for g in leaves)
    assert sum(float(jnp.abs(g).sum()) for g in leaves) > 0


def test_variant_specific_parameters_exist_and_matter():
    assert hasattr(MultiHeadAttention(D, N, config=VARIANTS["sink"], rngs=nnx.Rngs(0)), "sink_logit")
    assert hasattr(MultiHeadAttention(D, N, config=VARIANTS["gated"], rngs=nnx.Rngs(0)), "gate_proj")
    assert hasattr(MultiHeadAttention(D, N, config=VARIANTS["qk_norm"], rngs=nnx.Rngs(0)), "query_norm")
    assert hasattr(MultiHeadAttention(D, N, config=VARIANTS["ssmax"], rngs=nnx.Rngs(0)), "ssmax_scale")
    x, _ = x_and_context(4)
    sink = Block(D, N, attention=VARIANTS["sink"], rngs=nnx.Rngs(0))
    maps = capture_attention(sink, x)["attn"]
    np.testing.assert_array_less(np.asarray(maps).sum(-1), 1.0)  # the sink takes some mass
    sink.attn.sink_logit[...] = jnp.full((N,), -50.0)  # a sink nobody visits = plain softmax
    np.testing.assert_allclose(capture_attention(sink, x)["attn"].sum(-1), 1.0, atol=1e-5)


def test_window_variant_limits_the_receptive_field():
    x = jax.random.normal(jax.random.key(5), (1, 9, D))
    mha = MultiHeadAttention(D, N, config=AttentionConfig(window=3), rngs=nnx.Rngs(0))
    w = np.asarray(capture_attention(mha, x, is_causal=True)["attn"])
    np.testing.assert_array_equal(w[0] > 0, np.broadcast_to(A.sliding_window_mask(9, 3)[0, 0], (N, 9, 9)))


CALLS = []


def uniform_attention(q, k, v, mask, bias):
    """A researcher's variant: ignore the logits, attend uniformly to what the mask allows."""
    CALLS.append(mask is not None)
    w = jnp.ones((q.shape[0], q.shape[2], q.shape[1], k.shape[1]))
    if mask is not None:
        w = jnp.where(mask, w, 0.0)
    w = w / w.sum(-1, keepdims=True)
    return jnp.einsum("bnts,bsnh->btnh", w, v), w


def test_custom_attention_function_is_used():
    register_variant("test_uniform", AttentionConfig(fn=uniform_attention), overwrite=True)
    mha = MultiHeadAttention(D, N, config=get_variant("test_uniform"), rngs=nnx.Rngs(0))
    x, _ = x_and_context(6)
    w = capture_attention(mha, x, is_causal=True)["attn"]
    np.testing.assert_allclose(w[0, 0, 2], [1 / 3] * 3 + [0] * (T - 3), atol=1e-6)
    assert CALLS and CALLS[-1] is True
    assert get_variant(f"{__name__}:uniform_attention").fn is uniform_attention
    with pytest.raises(ValueError, match="unknown variant 'nope'"):
        get_variant("nope")
    with pytest.raises(ValueError, match="cannot load"):
        get_variant(f"{__name__}:missing")
    with pytest.raises(ValueError, match="already exists"):
        register_variant("test_uniform", AttentionConfig())


def test_head_gate_zero_removes_exactly_that_head():
    x, _ = x_and_context(7)
    mha = MultiHeadAttention(D, N, rngs=nnx.Rngs(0))
    H = D // N
    q, k, v = (mha._heads(p(x)) for p in (mha.query_proj, mha.key_proj, mha.value_proj))
    out, _ = A.dot_product_attention(q, k, v)
    out = out.at[:, :, 1].set(0.0)  # drop head 1 by hand
    expected = mha.out_proj(out.reshape(2, T, D))
    mha.head_gate[...] = jnp.array([1.0, 0.0, 1.0])
    np.testing.assert_allclose(mha(x), expected, atol=1e-5)
    assert not isinstance(mha.head_gate, nnx.Param) and isinstance(mha.head_gate, HeadGate)
    assert H * N == D


def test_block_switches():
    x, _ = x_and_context(8)
    pre = Block(D, N, rngs=nnx.Rngs(0))
    manual = x + pre.attn(pre.norms[0](x))
    manual = manual + pre.mlp(pre.norms[1](manual))
    np.testing.assert_allclose(pre(x), manual, atol=1e-5)

    post = Block(D, N, norm="post", rngs=nnx.Rngs(0))
    manual = post.norms[0](x + post.attn(x))
    np.testing.assert_allclose(post(x), post.norms[1](manual + post.mlp(manual)), atol=1e-5)

    san = Block(D, N, norm="none", residual=False, use_mlp=False, rngs=nnx.Rngs(0))  # pure attention
    np.testing.assert_allclose(san(x), san.attn(x), atol=1e-6)
    assert san.mlp is None and len(san.norms) == 0

    with pytest.raises(ValueError, match="norm must be 'pre', 'post' or 'none', got 'mid'"):
        Block(D, N, norm="mid", rngs=nnx.Rngs(0))


def test_encoder_decoder_and_capture_names():
    x, ctx = x_and_context(9)

    class EncDec(nnx.Module):
        def __init__(self, rngs):
            self.encoder = Encoder(2, D, N, rngs=rngs)
            self.decoder = Decoder(3, D, N, norm="post", rngs=rngs)

        def __call__(self, x, ctx):
            return self.decoder(x, self.encoder(ctx))

    model = EncDec(nnx.Rngs(0))
    outs = model(x, ctx)
    assert len(outs) == 3 and outs[-1].shape == (2, T, D)
    maps = capture_attention(model, x, ctx)
    assert list(maps) == ["encoder.layers.0.attn", "encoder.layers.1.attn",
                          "decoder.layers.0.attn", "decoder.layers.0.cross_attn",
                          "decoder.layers.1.attn", "decoder.layers.1.cross_attn",
                          "decoder.layers.2.attn", "decoder.layers.2.cross_attn"]
    assert maps["encoder.layers.0.attn"].shape == (2, N, S, S)
    assert maps["decoder.layers.2.cross_attn"].shape == (2, N, T, S)
    np.testing.assert_allclose(maps["decoder.layers.1.cross_attn"].sum(-1), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="cross-attention: pass context"):
        model.decoder.layers[0](x)


def test_capture_matches_manual_weights_and_logits():
    x, _ = x_and_context(10)
    mha = MultiHeadAttention(D, N, rngs=nnx.Rngs(0))
    weights, logits = capture_attention(mha, x, with_logits=True)
    q, k = mha._heads(mha.query_proj(x)), mha._heads(mha.key_proj(x))
    manual = jnp.einsum("btnh,bsnh->bnts", q, k) / np.sqrt(D // N)
    np.testing.assert_allclose(logits["attn"], manual, atol=1e-5)
    np.testing.assert_allclose(weights["attn"], jax.nn.softmax(manual, -1), atol=1e-5)


def test_long_inputs_use_the_chunked_path_unless_captured():
    x = jax.random.normal(jax.random.key(11), (1, 2048, 8))
    mha = MultiHeadAttention(8, 2, rngs=nnx.Rngs(0))
    dense = MultiHeadAttention(8, 2, config=AttentionConfig(chunk_size=None), rngs=nnx.Rngs(0))
    y_auto = jax.jit(lambda m, x: m(x, is_causal=True))(mha, x)
    y_dense = jax.jit(lambda m, x: m(x, is_causal=True))(dense, x)
    np.testing.assert_allclose(y_auto, y_dense, atol=1e-5)
    shape = jax.ShapeDtypeStruct(x.shape, x.dtype)
    gd, st = nnx.split(mha)
    gd2, st2 = nnx.split(dense)
    mem = lambda g: jax.jit(lambda s, x: nnx.merge(g, s)(x, is_causal=True)).lower(
        st, shape).compile().memory_analysis().temp_size_in_bytes
    assert mem(gd) < mem(gd2) / 2  # auto chunking really avoids the (T, S) matrix
    assert capture_attention(mha, x[:, :300], is_causal=True)["attn"].shape == (1, 2, 300, 300)


def test_config_errors():
    with pytest.raises(ValueError, match="normalizer must be one of"):
        AttentionConfig(normalizer="sofmax")
    with pytest.raises(ValueError, match="sink=True needs normalizer='softmax'"):
        AttentionConfig(sink=True, normalizer="sigmoid")
    with pytest.raises(ValueError, match="position must be"):
        AttentionConfig(position="learned")
    with pytest.raises(ValueError, match="d_model=10 is not divisible by num_heads=3"):
        MultiHeadAttention(10, 3, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"x must have shape \(B, T, D\)"):
        MultiHeadAttention(D, N, rngs=nnx.Rngs(0))(jnp.ones((T, D)))


def test_sigma_reparam_starts_equal_and_bounds_the_spectral_norm():
    plain = MultiHeadAttention(D, N, rngs=nnx.Rngs(0))
    reparam = MultiHeadAttention(D, N, config=AttentionConfig(sigma_reparam=True), rngs=nnx.Rngs(0))
    x, _ = x_and_context(12)
    np.testing.assert_allclose(reparam(x), plain(x), atol=1e-4)  # gamma = sigma(W0): same function at init
    w = reparam.query_proj.kernel[...]
    np.testing.assert_allclose(reparam.query_proj.gamma[...], np.linalg.norm(np.asarray(w), 2), rtol=1e-2)  # 8 power iterations
    reparam.query_proj.kernel[...] = w * 100.0  # scaling W does not change W / sigma(W)
    np.testing.assert_allclose(reparam(x), plain(x), atol=1e-4)
