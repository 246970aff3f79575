"""tinytf.models: the causal LM (forward, KV-cache decoding, StreamingLLM cache) and the ViT.

References are independent of the code under test: greedy decoding against argmax of a
full forward pass recomputed at every step; the StreamingLLM cache against a brute-force
loop that rebuilds, for every token, the list of tokens it may see and their positions
and calls the layers' plain (non-cache) path; patch embedding against reshape + matmul
in numpy. Sizes are odd and distinct (vocab 13, d 24, 3 heads, T 11/17, images 15x15
with 5x5 patches, 7 classes), so a transposed axis cannot pass.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from tinytf.attention import sliding_window_mask
from tinytf.cache import CachePolicy
from tinytf.models import CausalLM, LMConfig, PatchEmbed, ViT, ViTConfig, streaming_forward, \
    streaming_nll
from tinytf.capture import capture_attention
from tinytf.train import fit
from tinytf.variants import AttentionConfig

B = 3
SMALL = dict(vocab_size=13, d_model=24, num_layers=2, num_heads=3, max_len=13, mlp_ratio=2.0)


@functools.cache
def lm(position="rope", seed=0, **overrides):
    """A small CausalLM (cached: building and compiling are the slow part on a CPU)."""
    return CausalLM(LMConfig(position=position, **{**SMALL, **overrides}), rngs=nnx.Rngs(seed))


@functools.cache
def forward_fn(model):
    """A jitted full forward pass for one model (functional form over nnx.split state)."""
    return jitted(model, lambda m, *args, **kwargs: m(*args, **kwargs))


def jitted(model, fn):
    """jax.jit of fn(model, *args) with the model's state traced (one compile, no Python graph walk)."""
    graphdef, state = nnx.split(model)
    run = jax.jit(lambda state, *args, **kwargs: fn(nnx.merge(graphdef, state), *args, **kwargs))
    return lambda *args, **kwargs: run(state, *args, **kwargs)


def random_tokens(seed, length, batch=B, vocab=SMALL["vocab_size"]):
    return jax.random.randint(jax.random.key(seed), (batch, length), 0, vocab)


def cast(model, dtype):
    """Copy of a model whose floating-point state is in dtype."""
    graphdef, state = nnx.split(model)
    state = jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, state)
    return nnx.merge(graphdef, state)


# ------------------------------------------------------------------------ LM: forward
def test_lm_shapes_and_dtypes():
    model = lm("rope")
    tokens = random_tokens(0, 11)
    logits = forward_fn(model)(tokens)
    assert logits.shape == (B, 11, SMALL["vocab_size"]) and logits.dtype == jnp.float32
    low = forward_fn(cast(model, jnp.bfloat16))(tokens)
    assert low.dtype == jnp.bfloat16 and bool(jnp.isfinite(low.astype(jnp.float32)).all())
    # bfloat16 has 8 bits of mantissa: agree to a few percent of the logits' spread
    err = float(jnp.abs(low.astype(jnp.float32) - logits).max())
    assert err < 0.05 * float(logits.std()) + 0.02, err


@pytest.mark.parametrize("position", ["learned", "sinusoidal", "rope", "alibi", "none"])
def test_lm_never_uses_future_tokens(position):
    model, t = lm(position), 6
    tokens = random_tokens(1, 11)
    changed = tokens.at[:, t].set((tokens[:, t] + 5) % SMALL["vocab_size"])
    run = forward_fn(model)
    a, b = run(tokens), run(changed)
    np.testing.assert_array_equal(np.asarray(a[:, :t]), np.asarray(b[:, :t]))  # exactly: no path from t to < t
    assert float(jnp.abs(a[:, t:] - b[:, t:]).min(axis=-1).max()) > 0  # and the perturbation does reach t


def test_lm_capture_attention_names_and_causality():
    maps = capture_attention(lm("rope"), random_tokens(2, 11))
    assert list(maps) == ["blocks.0.attn", "blocks.1.attn"]
    w = np.asarray(maps["blocks.1.attn"])
    assert w.shape == (B, 3, 11, 11)
    assert np.all(np.triu(w, k=1) == 0)  # no weight above the diagonal
    np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-5)


def test_lm_tied_embeddings_share_the_matrix():
    model = lm("rope", tie_embeddings=True)
    assert model.lm_head is None
    params = nnx.state(model, nnx.Param)
    n_untied = sum(x.size for x in jax.tree.leaves(nnx.state(lm("rope"), nnx.Param)))
    assert n_untied - sum(x.size for x in jax.tree.leaves(params)) == SMALL["vocab_size"] * SMALL["d_model"]
    tokens = random_tokens(3, 5)
    # gradient of one logit w.r.t. the embedding table is non-zero in that logit's row (the head path)
    graphdef, params = nnx.split(model)
    g = jax.jit(jax.grad(lambda p: nnx.merge(graphdef, p)(tokens)[0, -1, 4]))(params)
    row_norms = jnp.abs(g["token_embed"]["embedding"][...]).sum(-1)  # (V,)
    # non-zero exactly in row 4 (the output path) and the rows of the tokens read (the input path)
    assert set(np.flatnonzero(np.asarray(row_norms))) == set(np.asarray(tokens[0]).tolist()) | {4}


# ------------------------------------------------------------------ LM: KV-cache decoding
def greedy_by_recomputation(model, prompt, n):
    """The reference: n times, run the full forward pass and append the argmax at the last token.

    The sequence is zero-padded to its final length so that one compiled forward serves
    every step (padding after position t cannot change logits at t: tested above).
    """
    P = prompt.shape[1]
    run, seq = forward_fn(model), jnp.pad(prompt, ((0, 0), (0, n)))
    for t in range(P, P + n):
        seq = seq.at[:, t].set(jnp.argmax(run(seq)[:, t - 1], axis=-1).astype(seq.dtype))
    return seq


@pytest.mark.parametrize("position", ["rope", "learned", "alibi"])
def test_greedy_generation_equals_full_recomputation(position):
    model = lm(position)
    prompt = random_tokens(4, 5)
    out = model.generate(prompt, 7)
    assert out.shape == (B, 12) and out.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(out), np.asarray(greedy_by_recomputation(model, prompt, 7)))


@pytest.mark.parametrize("position", ["rope", "learned", "alibi", "sinusoidal"])
def test_dense_streaming_equals_forward(position):
    model, tokens = lm(position), random_tokens(5, 11)
    np.testing.assert_allclose(streaming_forward(model, tokens), forward_fn(model)(tokens), atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("position", ["rope", "alibi"])
def test_window_cache_equals_sliding_window_mask(position):
    """Without sinks, cache-relative positions keep every offset, so the cache = a sliding-window mask."""
    model, tokens = lm(position), random_tokens(6, 17)
    ref = forward_fn(model)(tokens, mask=sliding_window_mask(17, 5))
    np.testing.assert_allclose(streaming_forward(model, tokens, window=5), ref, atol=2e-5, rtol=1e-5)


def streaming_by_brute_force(model, tokens, window, sinks, relative=True):
    """Independent StreamingLLM reference: no slots, no ring buffer, the layers' plain call path.

    For every token t: the visible tokens are the first `sinks` and the last `window`
    (t included); with relative positions each gets its rank in that sorted list. Layer
    l's keys for token j come from j's layer-l input, computed when j was processed.
    The visible list is padded to sinks + window entries (masked) so shapes stay fixed.
    """
    cfg, size = model.config, sinks + window
    L = tokens.shape[1]
    hidden = [dict() for _ in range(cfg.num_layers + 1)]  # hidden[l][j]: (B, D) input of layer l
    logits = []
    for t in range(L):
        visible = sorted(set(range(min(sinks, t + 1))) | set(range(max(0, t - window + 1), t + 1)))
        pos = list(range(len(visible))) if relative else visible
        pad = size - len(visible)
        q_pos, k_pos = jnp.array([pos[-1]]), jnp.array(pos + [0] * pad)
        mask = jnp.array([True] * len(visible) + [False] * pad)[None, None, None, :]  # (1, 1, 1, size)
        h = model.token_embed.embedding[...][tokens[:, t]]
        if cfg.position == "learned":
            h = h + model.position_embed.embedding[...][pos[-1]]
        hidden[0][t] = h
        for layer, block in enumerate(model.blocks):
            x = hidden[layer][t][:, None]  # (B, 1, D)
            context = jnp.stack([hidden[layer][j] for j in visible] + [jnp.zeros_like(h)] * pad, axis=1)
            norm_x, norm_c = block.norms[0](x), block.norms[0](context)  # (B, 1, D), (B, size, D)
            x = x + block.attn(norm_x, context=norm_c, mask=mask, positions=q_pos, context_positions=k_pos)
            x = x + block.mlp(block.norms[1](x))
            hidden[layer + 1][t] = x[:, 0]
        logits.append(model.lm_head(model.final_norm(hidden[-1][t])))
    return jnp.stack(logits, axis=1)  # (B, L, V)


@pytest.mark.parametrize("position,relative", [("rope", True), ("alibi", True), ("learned", True), ("rope", False)])
def test_window_plus_sink_cache_equals_brute_force(position, relative):
    model, tokens = lm(position), random_tokens(7, 17)
    ref = streaming_by_brute_force(model, tokens, window=4, sinks=2, relative=relative)
    got = streaming_forward(model, tokens, window=4, sink_tokens=2, relative_positions=relative)
    np.testing.assert_allclose(got, ref, atol=3e-5, rtol=1e-5)
    if position != "learned":  # (17 tokens exceed the learned table; the cache keeps positions < 6)
        dense = forward_fn(model)(tokens)  # the cache does change the answer once tokens are evicted
        assert float(jnp.abs(got[:, 6:] - dense[:, 6:]).max()) > 1e-3
        np.testing.assert_allclose(got[:, :6], dense[:, :6], atol=2e-5, rtol=1e-5)  # cache (2 + 4) not yet full


def test_streaming_attention_maps_and_slot_table():
    model, tokens = lm("rope"), random_tokens(7, 17)
    logits, maps, slots = streaming_forward(model, tokens, window=4, sink_tokens=2, return_attention=True)
    assert slots.shape == (17, 6) and maps["blocks.0.attn"].shape == (B, 3, 17, 6)
    # after token 11 the cache holds the sinks 0, 1 and the window 8..11 (ring: 11 -> slot 2 + 9 % 4)
    assert sorted(np.asarray(slots[11]).tolist()) == [0, 1, 8, 9, 10, 11] and int(slots[11, 2 + 9 % 4]) == 11
    assert np.asarray(slots[1]).tolist() == [0, 1, -1, -1, -1, -1]
    w = np.asarray(maps["blocks.1.attn"])
    np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-5)
    assert np.all(w[:, :, 1, 2:] == 0)  # empty slots get no weight
    np.testing.assert_allclose(logits, streaming_forward(model, tokens, window=4, sink_tokens=2), atol=1e-6)


@pytest.mark.parametrize("position", ["rope", "learned"])
def test_generation_with_window_and_sinks_is_consistent_with_streaming(position):
    """Greedy decoding through the cache picks the argmax of the same cache policy, teacher-forced."""
    model = lm(position)
    prompt = random_tokens(9, 7)
    out = model.generate(prompt, 10, window=4, sink_tokens=2)  # 17 tokens through a 6-slot cache
    logits = streaming_forward(model, out, window=4, sink_tokens=2)
    np.testing.assert_array_equal(np.asarray(out[:, 7:]), np.asarray(jnp.argmax(logits[:, 6:-1], -1)))


def test_sampling_is_seeded_and_top_k_1_is_greedy():
    model, prompt = lm("rope"), random_tokens(10, 5)
    a = model.generate(prompt, 7, key=jax.random.key(1), temperature=1.0)
    b = model.generate(prompt, 7, key=jax.random.key(1), temperature=1.0)
    c = model.generate(prompt, 7, key=jax.random.key(2), temperature=1.0)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert bool((a != c).any())
    np.testing.assert_array_equal(np.asarray(a[:, :5]), np.asarray(prompt))
    greedy = model.generate(prompt, 7)
    top1 = model.generate(prompt, 7, key=jax.random.key(3), temperature=2.0, top_k=1)
    np.testing.assert_array_equal(np.asarray(top1), np.asarray(greedy))


def test_streaming_nll_matches_cross_entropy_of_forward():
    model, tokens = lm("rope"), random_tokens(11, 11)
    nll = streaming_nll(model, tokens)
    ref = optax.softmax_cross_entropy_with_integer_labels(forward_fn(model)(tokens)[:, :-1], tokens[:, 1:])
    assert nll.shape == (B, 10)
    np.testing.assert_allclose(nll, ref, atol=2e-5, rtol=1e-5)


def test_cache_policy_slots_brute_force():
    """Slot contents after each token, against a list that appends and evicts explicitly."""
    for length, window, sinks in [(13, 4, 2), (11, 3, 0), (7, 5, 3), (5, None, 1), (9, 2, 9)]:
        policy = CachePolicy.make(length, window=window, sink_tokens=sinks)
        kept = []
        for t in range(length):
            kept.append(t)
            if window is not None:
                kept = [j for j in kept if j < sinks or j > t - window]
            index, valid = policy.contents(jnp.int32(t))
            assert sorted(np.asarray(index)[np.asarray(valid)].tolist()) == kept, (length, window, sinks, t)
            assert int(policy.slots(jnp.int32(t))) < policy.size


# ---------------------------------------------------------------------- LM: errors
def test_learned_positions_beyond_max_len_raise():
    model = lm("learned")  # max_len 13
    with pytest.raises(ValueError, match="max_len=13"):
        model(random_tokens(12, 14))
    with pytest.raises(ValueError, match="max_len=13"):
        model(random_tokens(12, 5), positions=jnp.arange(10, 15))
    with pytest.raises(ValueError, match="max_len=13"):
        model.generate(random_tokens(12, 10), 4)
    with pytest.raises(ValueError, match="max_len=13"):
        streaming_forward(model, random_tokens(12, 17), window=4, relative_positions=False)
    # with a window and cache-relative positions the stream may be longer than max_len
    assert streaming_forward(model, random_tokens(12, 17), window=4, sink_tokens=2).shape == (B, 17, 13)


@pytest.mark.parametrize("kwargs,match", [
    (dict(position="absolute"), "position must be one of"),
    (dict(d_model=24, num_heads=5), "not divisible by num_heads"),
    (dict(d_model=15, num_heads=3, position="rope"), "even head dim"),
    (dict(norm="sandwich"), "norm must be 'pre' or 'post'"),
    (dict(vocab_size=0), "vocab_size must be a positive int"),
    (dict(attention="no_such_variant"), "unknown variant"),
    (dict(position="learned", attention=AttentionConfig(position="rope")), "conflicts with position"),
])
def test_lm_config_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LMConfig(**{**SMALL, **kwargs})


def test_lm_call_and_generate_argument_errors():
    model = lm("rope")
    with pytest.raises(ValueError, match=r"tokens must be a \(B, T\) integer"):
        model(jnp.zeros((3, 5)))
    with pytest.raises(ValueError, match="positions must have shape"):
        model(random_tokens(0, 5), positions=jnp.arange(4))
    with pytest.raises(ValueError, match="needs key="):
        model.generate(random_tokens(0, 3), 2, temperature=1.0)
    with pytest.raises(ValueError, match="top_k must be"):
        model.generate(random_tokens(0, 3), 2, key=jax.random.key(0), temperature=1.0, top_k=99)
    with pytest.raises(ValueError, match="window must be a positive int"):
        model.generate(random_tokens(0, 3), 2, window=0)
    with pytest.raises(ValueError, match="sink_tokens must be an int"):
        streaming_forward(model, random_tokens(0, 3), sink_tokens=-1)
    with pytest.raises(TypeError, match="LMConfig"):
        CausalLM(ViTConfig(), rngs=nnx.Rngs(0))


def test_presets_instantiate():
    for config in (LMConfig.tiny(), LMConfig.micro(), LMConfig.tiny(position="rope", tie_embeddings=True)):
        model = CausalLM(config, rngs=nnx.Rngs(0))
        assert len(model.blocks) == config.num_layers
    assert LMConfig.tiny().d_model == 64 and LMConfig.tiny().num_heads == 4 and LMConfig.micro().d_model < 64
    assert LMConfig.tiny(position="alibi").layer_attention.position == "alibi"
    assert LMConfig.tiny(attention="softmax1").layer_attention.normalizer == "softmax1"
    for config, T in ((ViTConfig.tiny16(), 17), (ViTConfig.tiny32(num_registers=4), 69)):
        model = ViT(config, rngs=nnx.Rngs(0))
        assert config.num_tokens == T and model.embed(jnp.zeros((1, config.image_size, config.image_size, 3))
                                                      ).shape == (1, T, 64)


# ------------------------------------------------------------------------------- ViT
VIT_SMALL = dict(image_size=15, patch_size=5, channels=3, num_classes=7, d_model=24, num_layers=2, num_heads=3)


def images(seed, batch=B, size=15, channels=3):
    return jax.random.normal(jax.random.key(seed), (batch, size, size, channels))


def test_patch_embed_equals_patchify_matmul():
    embed = PatchEmbed(5, 3, 11, rngs=nnx.Rngs(0))
    x = np.asarray(images(0, batch=2, size=15))
    patches = x.reshape(2, 3, 5, 3, 5, 3).transpose(0, 1, 3, 2, 4, 5).reshape(2, 9, 75)  # (B, P, p*p*C) row-major
    kernel = np.asarray(embed.proj.kernel[...]).reshape(75, 11)  # (p, p, C, D) -> (p*p*C, D)
    ref = patches @ kernel + np.asarray(embed.proj.bias[...])
    np.testing.assert_allclose(embed(jnp.asarray(x)), ref, atol=1e-5, rtol=1e-5)
    conv = np.asarray(embed.proj(jnp.asarray(x))).reshape(2, 9, 11)  # the strided convolution itself
    np.testing.assert_allclose(embed(jnp.asarray(x)), conv, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="not divisible by patch_size=5"):
        embed(jnp.zeros((1, 16, 15, 3)))
    with pytest.raises(ValueError, match="C=3"):
        embed(jnp.zeros((1, 15, 15, 2)))


@pytest.mark.parametrize("registers", [0, 4])
def test_vit_shapes_registers_and_attention_maps(registers):
    model = ViT(ViTConfig(num_registers=registers, **VIT_SMALL), rngs=nnx.Rngs(0))
    x = images(1)
    logits, tokens, from_tokens, features, patches = jitted(model, lambda m, x: (
        m(x), m.embed(x), m.forward_from_embeddings(m.embed(x)), m.features(x), m.patch_embed(x)))(x)
    assert logits.shape == (B, 7) and logits.dtype == jnp.float32
    T = 1 + registers + 9
    maps = capture_attention(model, x)
    assert list(maps) == ["blocks.0.attn", "blocks.1.attn"] and maps["blocks.1.attn"].shape == (B, 3, T, T)
    assert tokens.shape == (B, T, 24)
    # token order [CLS, registers, patches]: registers are the learned vectors, without positions
    if registers:
        np.testing.assert_allclose(tokens[:, 1:1 + registers], jnp.broadcast_to(model.registers[...], (B, 4, 24)))
    pos = model.position_embed.embedding[...]
    np.testing.assert_allclose(tokens[:, 0], jnp.broadcast_to(model.cls_token[...][0, 0] + pos[0], (B, 24)), atol=1e-6)
    np.testing.assert_allclose(tokens[:, 1 + registers:], patches + pos[1:], atol=1e-6)
    np.testing.assert_allclose(from_tokens, logits, atol=1e-6)
    assert features.shape == (B, T, 24)


def test_vit_patch_saliency_and_bfloat16():
    model = ViT(ViTConfig(num_registers=2, position="sine2d", pool="mean", **VIT_SMALL), rngs=nnx.Rngs(1))
    x = images(2)

    def saliency_fn(m, x):
        tokens = m.embed(x)
        grad = jax.grad(lambda e: m.forward_from_embeddings(e)[:, 3].sum())(tokens)
        return (grad * tokens).sum(-1)[:, 3:], m(x)  # gradient x input on the 9 patch tokens

    saliency, ref = jitted(model, saliency_fn)(x)
    assert saliency.shape == (B, 9) and float(jnp.abs(saliency).sum()) > 0
    low = forward_fn(cast(model, jnp.bfloat16))(x)
    assert low.dtype == jnp.bfloat16
    assert float(jnp.abs(low.astype(jnp.float32) - ref).max()) < 0.05 * float(ref.std()) + 0.02


@pytest.mark.parametrize("kwargs,match", [
    (dict(image_size=16), "not divisible by patch_size"),
    (dict(position="rope"), "position must be 'learned', 'sine2d' or 'none'"),
    (dict(attention=AttentionConfig(position="rope")), "no 1-D order"),
    (dict(num_registers=-1), "num_registers must be an int >= 0"),
    (dict(pool="max"), "pool must be 'cls' or 'mean'"),
    (dict(d_model=30, num_heads=3, position="sine2d"), "divisible by 4"),
])
def test_vit_config_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ViTConfig(**{**VIT_SMALL, **kwargs})


def test_vit_wrong_image_shape_raises():
    model = ViT(ViTConfig(**VIT_SMALL), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"images must have shape \(B, 15, 15, 3\)"):
        model(jnp.zeros((2, 10, 10, 3)))


# ------------------------------------------------- end-to-end training (tinytf.train.fit)
def test_lm_learns_induction_copy_task():
    """8 random tokens then the same 8 again: the repeated half is only predictable by copying."""
    half, vocab = 8, 16

    def sample(key, batch=32):
        first = jax.random.randint(key, (batch, half), 0, vocab)
        return jnp.concatenate([first, first], axis=1)  # (B, 16)

    def loss_fn(model, tokens):
        logits = model(tokens)[:, half:-1]  # predictions of tokens half+1 .. 2*half-1
        return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, half + 1:]).mean()

    model = CausalLM(LMConfig.micro(vocab_size=vocab, position="rope"), rngs=nnx.Rngs(0))
    history = fit(model, sample, steps=150, loss_fn=loss_fn, learning_rate=3e-3, progress=False)
    tokens = sample(jax.random.key(123), batch=256)
    accuracy = float((jnp.argmax(forward_fn(model)(tokens)[:, half:-1], -1) == tokens[:, half + 1:]).mean())
    assert accuracy > 0.9, (accuracy, history["loss"][::25])  # chance = 1/16


def bars(key, batch=64, size=16):
    """Grey 16x16 images with one horizontal (label 0) or vertical (label 1) 5-pixel bar, plus noise."""
    k1, k2, k3, k4 = jax.random.split(key, 4)
    label = jax.random.bernoulli(k1, 0.5, (batch,)).astype(jnp.int32)
    r = jax.random.randint(k2, (batch, 1, 1), 0, size)  # the bar's fixed row (horizontal) / column (vertical)
    s = jax.random.randint(k3, (batch, 1, 1), 0, size - 4)  # where along the bar it starts
    i, j = jnp.arange(size)[None, :, None], jnp.arange(size)[None, None, :]
    horizontal = (i == r) & (j >= s) & (j < s + 5)
    vertical = (j == r) & (i >= s) & (i < s + 5)
    image = jnp.where(label[:, None, None] == 0, horizontal, vertical).astype(jnp.float32)
    return image[..., None] + 0.3 * jax.random.normal(k4, (batch, size, size, 1)), label


def test_vit_learns_bar_orientation():
    config = ViTConfig.tiny16(channels=1, num_classes=2, d_model=32, num_heads=2, num_registers=1)

    def loss_fn(model, batch):
        x, y = batch
        return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()

    model = ViT(config, rngs=nnx.Rngs(0))
    history = fit(model, bars, steps=200, loss_fn=loss_fn, learning_rate=3e-3, progress=False)
    x, y = bars(jax.random.key(321), batch=512)
    accuracy = float((jnp.argmax(forward_fn(model)(x), -1) == y).mean())
    assert accuracy > 0.9, (accuracy, history["loss"][::25])  # chance = 0.5


# ------------------------------------------------------------------------ throughput
@pytest.mark.slow
def test_training_step_throughput():
    """Prints steps/s of one AdamW step, jax.jit over nnx.split state (no timed assertion).

    Run: pytest tests/test_models.py -m slow -k throughput -s
    """
    import os
    import time

    def measure(model, loss_fn, batch, calls=40, repeats=5):
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        opt = optax.adamw(1e-3)

        @jax.jit
        def step(params, opt_state):
            loss, grads = jax.value_and_grad(lambda p: loss_fn(nnx.merge(graphdef, p, rest), batch))(params)
            updates, opt_state = opt.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, loss

        state = (params, opt.init(params))
        start = time.perf_counter()
        jax.block_until_ready(step(*state))
        compile_s, rates, cpu_ms = time.perf_counter() - start, [], []
        for _ in range(repeats):
            p, o = state
            start, cpu = time.perf_counter(), time.process_time()
            for _ in range(calls):
                p, o, loss = step(p, o)
            loss.block_until_ready()
            rates.append(calls / (time.perf_counter() - start))
            cpu_ms.append(1e3 * (time.process_time() - cpu) / calls)
        assert bool(jnp.isfinite(loss))
        return float(np.median(rates)), float(np.max(rates)), float(np.median(cpu_ms)), compile_s

    def lm_loss(model, tokens):
        return optax.softmax_cross_entropy_with_integer_labels(model(tokens)[:, :-1], tokens[:, 1:]).mean()

    def vit_loss(model, batch):
        return optax.softmax_cross_entropy_with_integer_labels(model(batch[0]), batch[1]).mean()

    runs = {
        "LMConfig.tiny() B=32 T=32": (CausalLM(LMConfig.tiny(), rngs=nnx.Rngs(0)), lm_loss,
                                      random_tokens(0, 32, batch=32, vocab=64)),
        "ViTConfig.tiny16() B=64": (ViT(ViTConfig.tiny16(), rngs=nnx.Rngs(0)), vit_loss,
                                    (images(0, batch=64, size=16), jnp.zeros((64,), jnp.int32))),
    }
    for name, (model, loss_fn, batch) in runs.items():
        median, best, cpu_ms, compile_s = measure(model, loss_fn, batch)
        print(f"{name}: {median:.1f} steps/s median, {best:.1f} best of 5, {cpu_ms:.0f} CPU-ms/step "
              f"(first call incl. compile {compile_s:.1f} s; load average {os.getloadavg()[0]:.1f})")
