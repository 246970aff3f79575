"""fit(post_update=...) and QK-clip (Kimi K2's MuonClip) against hand computations in numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from tinytf.capture import capture_attention
from tinytf.models import CausalLM, LMConfig
from tinytf.nn import MultiHeadAttention
from tinytf.train import cross_entropy, fit, qk_clip, with_head_max_logits
from tinytf.train.qk_clip import qk_clip_scales
from tinytf.variants import AttentionConfig


class Count(nnx.Variable):
    """A non-trained counter the hook writes."""


class Quadratic(nnx.Module):
    def __init__(self):
        self.w = nnx.Param(jnp.array([3.0, -5.0, 7.0]))
        self.calls = Count(jnp.zeros((), jnp.int32))
        self.seen_loss = Count(jnp.zeros((), jnp.float32))


def quadratic_loss(model, batch):
    return jnp.sum((model.w[...] - batch) ** 2)


def halve_and_count(model, outputs):
    model.w[...] = 0.5 * model.w[...]
    model.calls[...] = model.calls[...] + 1
    model.seen_loss[...] = outputs["loss"]


@pytest.mark.parametrize("steps_per_call", [1, 3, 11])
def test_post_update_runs_after_every_update_and_sees_the_steps_outputs(steps_per_call):
    model, target, lr = Quadratic(), np.array([1.0, 2.0, -1.0]), 0.1
    history = fit(model, lambda key: jnp.asarray(target, jnp.float32), steps=7, loss_fn=quadratic_loss,
                  optimizer=optax.sgd(lr), steps_per_call=steps_per_call, progress=False, post_update=halve_and_count)
    w, losses = np.array([3.0, -5.0, 7.0]), []
    for _ in range(7):  # by hand: SGD step on the loss, then the hook halves w
        losses.append(np.sum((w - target) ** 2))
        w = 0.5 * (w - lr * 2 * (w - target))
    np.testing.assert_allclose(model.w[...], w, rtol=1e-6)
    assert int(model.calls[...]) == 7
    np.testing.assert_allclose(history["loss"], losses, rtol=1e-6)
    assert float(model.seen_loss[...]) == pytest.approx(losses[-1], rel=1e-6)  # this step's, pre-update loss


def numpy_logits(x, layer):
    """Per-head logits (B, N, T, T) of a plain MultiHeadAttention, by hand."""
    N, H = layer.num_heads, layer.head_dim
    q = x @ np.asarray(layer.query_proj.kernel[...]) + np.asarray(layer.query_proj.bias[...])
    k = x @ np.asarray(layer.key_proj.kernel[...]) + np.asarray(layer.key_proj.bias[...])
    B, T, _ = x.shape
    q, k = q.reshape(B, T, N, H), k.reshape(B, T, N, H)
    return np.einsum("bthd,bshd->bhts", q, k) / np.sqrt(H)


def causal_max(s):
    T = s.shape[-1]
    return np.where(np.tril(np.ones((T, T), bool)), s, -np.inf).max(axis=(0, 2, 3))


def test_qk_clip_rescales_heads_over_tau_by_hand_and_leaves_the_others():
    layer = MultiHeadAttention(15, 3, rngs=nnx.Rngs(5))  # 3 heads of width 5
    layer.query_proj.bias[...] = jnp.linspace(-0.3, 0.4, 15)  # non-zero biases are scaled too
    layer.key_proj.bias[...] = jnp.linspace(0.2, -0.5, 15)
    x = np.random.default_rng(7).normal(size=(2, 7, 15)).astype(np.float32) * 2
    s = causal_max(numpy_logits(x, layer))
    loss = with_head_max_logits(lambda m, xb: jnp.sum(m(xb, is_causal=True) ** 2))
    _, metrics = loss(layer, jnp.asarray(x))
    np.testing.assert_allclose(metrics["head_max_logit"], s[None], rtol=1e-5)  # one layer, (1, 3)

    order = np.argsort(s)
    tau = float((s[order[0]] + s[order[1]]) / 2)  # the two largest heads are clipped, the smallest is not
    wq, wk = np.asarray(layer.query_proj.kernel[...]), np.asarray(layer.key_proj.kernel[...])
    bq, bk = np.asarray(layer.query_proj.bias[...]), np.asarray(layer.key_proj.bias[...])
    wv = np.asarray(layer.value_proj.kernel[...])
    before = numpy_logits(x, layer)
    qk_clip(tau)(layer, metrics)
    root = np.repeat(np.where(s > tau, np.sqrt(tau / s), 1.0), 5)  # hand computation
    np.testing.assert_allclose(layer.query_proj.kernel[...], wq * root, rtol=1e-6)
    np.testing.assert_allclose(layer.key_proj.kernel[...], wk * root, rtol=1e-6)
    np.testing.assert_allclose(layer.query_proj.bias[...], bq * root, rtol=1e-6)
    np.testing.assert_allclose(layer.key_proj.bias[...], bk * root, rtol=1e-6)
    after = numpy_logits(x, layer)
    new_max = causal_max(after)
    np.testing.assert_allclose(new_max[order[1:]], tau, rtol=1e-5)  # the clipped heads' max is now tau
    for h in order[1:]:  # every logit of a clipped head scales by tau / S_h
        np.testing.assert_allclose(after[:, h], before[:, h] * tau / s[h], rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(after[:, order[0]], before[:, order[0]])  # under tau: untouched
    np.testing.assert_array_equal(layer.value_proj.kernel[...], wv)  # values are not QK-clip's business


def test_head_max_logits_of_a_two_layer_lm_match_captured_logits():
    model = CausalLM(LMConfig.tiny(num_heads=4, max_len=11), rngs=nnx.Rngs(3))
    tokens = jax.random.randint(jax.random.key(1), (3, 11), 0, 64)
    _, metrics = with_head_max_logits(lambda m, t: jnp.mean(m(t)))(model, tokens)
    _, logits = capture_attention(model, tokens, with_logits=True)
    want = np.stack([causal_max(np.asarray(logits[f"blocks.{i}.attn"])) for i in range(2)])
    np.testing.assert_allclose(metrics["head_max_logit"], want, rtol=1e-5)


def test_qk_clip_in_fit_logs_per_head_max_and_a_huge_tau_changes_nothing():
    def batch(key):
        return jax.random.randint(key, (5, 9), 0, 64)

    def lm_loss(model, tokens):
        return cross_entropy(model(tokens)[:, :-1], tokens[:, 1:])

    runs = {}
    for name, kw in {"plain": {}, "huge tau": dict(post_update=qk_clip(1e9)),
                     "tau 0.5": dict(post_update=qk_clip(0.5))}.items():
        model = CausalLM(LMConfig.tiny(max_len=9), rngs=nnx.Rngs(0))
        loss = lm_loss if name == "plain" else with_head_max_logits(lm_loss)
        runs[name] = (model, fit(model, batch, steps=5, loss_fn=loss, learning_rate=3e-2, progress=False, **kw))
    plain, huge, small = (nnx.state(runs[n][0], nnx.Param) for n in runs)
    for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(huge)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    logged = np.stack(runs["tau 0.5"][1]["head_max_logit"])
    assert logged.shape == (5, 2, 4)  # every step, (layers, heads)
    # with tau 0.5 the query kernels are rescaled (by less than 1) at least once; the values are not
    diff = [np.max(np.abs(np.asarray(a) - np.asarray(b))) for a, b in zip(jax.tree.leaves(nnx.state(
        runs["tau 0.5"][0].blocks[0].attn.query_proj)), jax.tree.leaves(nnx.state(runs["plain"][0].blocks[0].attn.query_proj)))]
    assert max(diff) > 1e-3


def test_qk_clip_scales_and_errors():
    np.testing.assert_allclose(qk_clip_scales(jnp.array([[0.5, 2.0, 8.0, -9.0]]), 2.0), [[1.0, 1.0, 0.25, 1.0]])
    with pytest.raises(ValueError, match="tau must be > 0, got 0.0"):
        qk_clip(0.0)
    layer = MultiHeadAttention(15, 3, rngs=nnx.Rngs(0))
    with pytest.raises(KeyError, match="qk_clip needs the metric 'head_max_logit'"):
        qk_clip(1.0)(layer, {"loss": jnp.float32(1.0)})
    with pytest.raises(ValueError, match=r"has shape \(2, 3\), expected \(layers, heads\) = \(1, heads\)"):
        qk_clip(1.0)(layer, {"head_max_logit": jnp.ones((2, 3))})
    normed = MultiHeadAttention(15, 3, config=AttentionConfig(qk_norm=True), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="qk_clip cannot rescale attn: .*qk_norm=True"):
        qk_clip(1.0)(normed, {"head_max_logit": jnp.full((1, 3), 5.0)})
    with pytest.raises(TypeError, match="post_update must be callable"):
        fit(Quadratic(), lambda key: jnp.zeros(3), steps=1, loss_fn=quadratic_loss, post_update=3)
