"""Sink diagnostics and the StreamingLLM report, against numpy and brute force."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tinytf import diagnostics as dg
from tinytf.capture import capture_attention
from tinytf.models import CausalLM, LMConfig, streaming_forward

B, N, T = 3, 5, 7  # odd distinct sizes


def log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


# --------------------------------------------------------------------------- active/dormant head


def test_active_dormant_head_is_the_argmax_of_the_gap_by_brute_force():
    rng = np.random.default_rng(0)
    maps = {f"blocks.{i}.attn": jax.nn.softmax(jnp.asarray(rng.normal(size=(B, N, T, T)) * 2), -1) for i in range(3)}
    dormant = rng.random((B, T)) > 0.4
    active = ~dormant
    best = None
    for name, w in maps.items():
        w = np.asarray(w)
        for h in range(N):
            d, a = w[:, h, :, 0][dormant].mean(), w[:, h, :, 0][active].mean()
            if best is None or d - a > best[0] + 1e-7:
                best = (d - a, name, h, d, a)
    got = dg.active_dormant_head(maps, dormant, active)
    assert (got["layer"], got["head"]) == best[1:3]
    np.testing.assert_allclose([got["dormant"], got["active"]], best[3:], rtol=1e-5)


def test_active_dormant_head_finds_a_planted_sink_head_on_another_key():
    w = np.full((B, N, T, T), 1.0 / T)
    dormant = np.arange(T) % 2 == 0
    w[:, 3][:, dormant] = 0.0
    w[:, 3][:, dormant, 2] = 1.0  # head 3 parks its dormant rows on key 2
    got = dg.active_dormant_head({"only": jnp.asarray(w)}, dormant, ~dormant, key_index=2)
    assert got["head"] == 3 and got["dormant"] == pytest.approx(1.0) and got["active"] == pytest.approx(1.0 / T)
    with pytest.raises(ValueError, match="non-empty dict"):
        dg.active_dormant_head(jnp.asarray(w), dormant, ~dormant)


# --------------------------------------------------------------------------- streaming report


@pytest.fixture(scope="module")
def model():
    config = LMConfig(vocab_size=13, d_model=24, num_layers=2, num_heads=3, mlp_ratio=1.0, position="rope")
    return CausalLM(config, rngs=nnx.Rngs(3))


def test_dense_report_matches_the_parallel_forward_pass_and_numpy_entropy(model):
    prefix, L, start = 2, 11, 5
    tokens = jax.random.randint(jax.random.key(1), (B, prefix + L), 0, 13)
    rows = np.random.default_rng(2).random((B, L)) > 0.3
    report = dg.streaming_report(model, tokens, {"dense": {}}, score_from=start, prefix=prefix,
                                 layer="blocks.1.attn", query_mask=rows)["dense"]
    logp = log_softmax(np.asarray(model(tokens), np.float64))[:, prefix:-1]  # (B, L-1, V)
    nll = -np.take_along_axis(logp, np.asarray(tokens)[:, prefix + 1:, None], -1)[..., 0]  # (B, L-1)
    np.testing.assert_allclose(report["nll"], nll[:, start - 1:].mean(), rtol=1e-5)
    np.testing.assert_allclose(report["nll_by_position"], nll.mean(0), rtol=1e-5)
    w = np.asarray(capture_attention(model, tokens)["blocks.1.attn"], np.float64)[:, :, prefix + start:]  # (B,N,.,S)
    entropy = -(w * np.log(np.where(w > 0, w, 1.0))).sum(-1)  # (B, N, L - start)
    expected = entropy.transpose(0, 2, 1)[rows[:, start:]].mean()
    np.testing.assert_allclose(report["entropy"], expected, rtol=1e-4)


def test_window_report_scores_the_window_policy(model):
    tokens = jax.random.randint(jax.random.key(4), (B, 17), 0, 13)
    policies = {"window": {"window": 5}, "window+sink": {"window": 4, "sink_tokens": 1}}
    report = dg.streaming_report(model, tokens, policies, score_from=7)
    for name, policy in policies.items():
        logp = log_softmax(np.asarray(streaming_forward(model, tokens, **policy), np.float64))[:, :-1]
        nll = -np.take_along_axis(logp, np.asarray(tokens)[:, 1:, None], -1)[..., 0]
        np.testing.assert_allclose(report[name]["nll"], nll[:, 6:].mean(), rtol=1e-5)
        assert "entropy" not in report[name]
    assert report["window"]["nll"] != report["window+sink"]["nll"]


def test_streaming_report_rejects_bad_arguments(model):
    tokens = jnp.zeros((B, 9), jnp.int32)
    with pytest.raises(ValueError, match="score_from=9"):
        dg.streaming_report(model, tokens, {"dense": {}}, score_from=9)
    with pytest.raises(ValueError, match="policies must be a non-empty dict"):
        dg.streaming_report(model, tokens, {}, score_from=3)
    with pytest.raises(ValueError, match=r"query_mask has shape \(3, 5\): expected \(B, L\) = \(3, 9\)"):
        dg.streaming_report(model, tokens, {"dense": {}}, score_from=3, layer="blocks.0.attn",
                            query_mask=np.ones((B, 5), bool))
    with pytest.raises(ValueError, match="layer 'blocks.7.attn' not in"):
        dg.streaming_report(model, tokens, {"dense": {}}, score_from=3, layer="blocks.7.attn")


# --------------------------------------------------------------------------- massive activations, value norms


def test_lm_states_reproduce_the_forward_pass_and_the_value_projection(model):
    tokens = jax.random.randint(jax.random.key(5), (B, T), 0, 13)
    states = dg.lm_states(model, tokens)
    assert len(states["hidden"]) == 3 and list(states["values"]) == ["blocks.0.attn", "blocks.1.attn"]
    np.testing.assert_allclose(model._logits(states["hidden"][-1]), model(tokens), rtol=1e-5, atol=1e-5)
    block = model.blocks[1]  # pre-norm: values = value_proj(LayerNorm(h_1)), split into heads
    x = np.asarray(block.norms[0](states["hidden"][1]))
    w, b = np.asarray(block.attn.value_proj.kernel[...]), np.asarray(block.attn.value_proj.bias[...])
    v = (x @ w + b).reshape(B, T, 3, -1).transpose(0, 2, 1, 3)  # (B, K, T, H)
    np.testing.assert_allclose(states["values"]["blocks.1.attn"], v, rtol=1e-4, atol=1e-5)


def test_massive_activations_and_value_norms_against_numpy():
    rng = np.random.default_rng(6)
    h = rng.normal(size=(B, T, 8))
    h[:, 2, 3] = 50.0  # a massive coordinate on the sink at position 2 (positions 0, 1: registers)
    got = dg.massive_activations([h, h * 2], sink_index=2, exclude=2)
    norms = np.linalg.norm(h, axis=-1)
    np.testing.assert_allclose(got["norm_ratio"], [norms[:, 2].mean() / np.median(norms[:, 3:])] * 2)
    np.testing.assert_allclose(got["max_ratio"], [50.0 / np.median(np.abs(h[:, 3:]))] * 2)
    v = rng.normal(size=(B, 2, T, 4))
    v[:, 1, 0] *= 0.01  # head 1's sink value is tiny
    ratio = dg.value_norm_ratio({"l": v})["l"]
    vn = np.linalg.norm(v, axis=-1)
    np.testing.assert_allclose(ratio, [vn[:, k, 0].mean() / np.median(vn[:, k, 1:]) for k in range(2)])
    assert ratio[1] < 0.05 < ratio[0]
    with pytest.raises(ValueError, match="sink_index=6"):
        dg.massive_activations([h], sink_index=6)
    with pytest.raises(ValueError, match="non-empty dict"):
        dg.value_norm_ratio([v])


# --------------------------------------------------------------------------- sink_report, recorder, eviction


def test_sink_report_against_numpy_on_the_captured_maps(model):
    prefix, L = 2, 9
    tokens = jax.random.randint(jax.random.key(5), (B, prefix + L), 0, 13)
    rng = np.random.default_rng(6)
    dormant = rng.random((B, L)) > 0.4
    active = ~dormant
    got = dg.sink_report(model, tokens, dormant, active, prefix=prefix, active_label="trig", sink_label="S")
    maps = {k: np.asarray(w, np.float64)[:, :, prefix:, prefix:] for k, w in capture_attention(model, tokens).items()}
    W = np.stack(list(maps.values()))  # (layers, B, N, L, L)
    on_sink = W[..., 0].transpose(0, 2, 1, 3)  # (layers, N, B, L)
    np.testing.assert_allclose(got["S dormant"], on_sink[:, :, dormant].mean(), rtol=1e-5)
    np.testing.assert_allclose(got["S trig"], on_sink[:, :, active].mean(), rtol=1e-5)
    np.testing.assert_allclose(got["null dormant"], (1 - W.sum(-1)).transpose(0, 2, 1, 3)[:, :, dormant].mean(),
                               atol=1e-6)
    gaps = on_sink[:, :, dormant].mean(-1) - on_sink[:, :, active].mean(-1)  # (layers, N)
    li, h = np.unravel_index(gaps.argmax(), gaps.shape)
    assert got["AD layer"] == list(maps)[li]
    np.testing.assert_allclose(got["AD S dormant"], on_sink[li, h][dormant].mean(), rtol=1e-5)
    # Gu's rate: importance of key 0 = mean over the queries of A[:, 0], per (sample, layer, head)
    alpha = W[..., 0].mean(-1)  # (layers, B, N)
    np.testing.assert_allclose(got["sink rate %"], 100 * (alpha > 0.3).mean(), rtol=1e-6)
    states = dg.lm_states(model, tokens)
    norms = [np.linalg.norm(np.asarray(hh, np.float64), axis=-1) for hh in states["hidden"][1:]]  # (B, P + L)
    expected = max(n[:, prefix].mean() / np.median(n[:, prefix + 1:]) for n in norms)
    np.testing.assert_allclose(got["S norm ratio"], expected, rtol=1e-5)
    v = np.linalg.norm(np.asarray(states["values"][got["AD layer"]], np.float64), axis=-1)[:, h]  # (B, P + L)
    np.testing.assert_allclose(got["S value ratio AD"], v[:, prefix].mean() / np.median(v[:, prefix + 1:]), rtol=1e-5)


def test_sink_recorder_follows_the_same_quantities(model):
    tokens = jax.random.randint(jax.random.key(7), (B, 3 + 7), 0, 13)
    dormant = np.random.default_rng(8).random((B, 7)) > 0.5
    rec = dg.sink_recorder(tokens, dormant, prefix=3)(0, model)
    full = dg.sink_report(model, tokens, dormant, ~dormant, prefix=3)
    np.testing.assert_allclose([float(rec["sink rate %"]), float(rec["BOS dormant"])],
                               [full["sink rate %"], full["BOS dormant"]], rtol=1e-6)


def test_eviction_report_is_three_streaming_reports_and_their_difference(model):
    tokens = jax.random.randint(jax.random.key(9), (B, 1 + 19), 0, 13)
    rows = np.random.default_rng(10).random((B, 19)) > 0.3
    metrics, by_position = dg.eviction_report(model, tokens, window=5, score_from=7, prefix=1,
                                              layer="blocks.0.attn", query_mask=rows)
    for name, policy in {"dense": {}, "window": {"window": 5, "sink_tokens": 1},
                         "window+BOS": {"window": 4, "sink_tokens": 2}}.items():
        ref = dg.streaming_report(model, tokens, {name: policy}, score_from=7, prefix=1, layer="blocks.0.attn",
                                  query_mask=rows)[name]
        np.testing.assert_allclose([metrics[f"NLL {name}"], metrics[f"H {name}"]], [ref["nll"], ref["entropy"]],
                                   rtol=1e-6)
        np.testing.assert_allclose(by_position[name], ref["nll_by_position"], rtol=1e-6)
    # the dense policy is the ordinary forward pass (numpy log-softmax)
    logp = log_softmax(np.asarray(model(tokens), np.float64))[:, 1:-1]
    nll = -np.take_along_axis(logp, np.asarray(tokens)[:, 2:, None], -1)[..., 0]
    np.testing.assert_allclose(metrics["NLL dense"], nll[:, 6:].mean(), rtol=1e-5)
    assert metrics["eviction cost"] == metrics["NLL window"] - metrics["NLL window+BOS"]
    with pytest.raises(ValueError, match="window must be an int >= 2, got 1"):
        dg.eviction_report(model, tokens, window=1, score_from=7)


def test_prepend_registers_against_numpy():
    from tinytf.models import prepend_registers
    rng = np.random.default_rng(11)
    batch = {"tokens": rng.integers(0, 13, (3, 5)).astype(np.int32), "targets": rng.integers(0, 13, (3, 5)).astype(np.int32),
             "loss_mask": rng.random((3, 5)) > 0.5, "trigger": rng.random((3, 5)) > 0.5, "other": np.ones((3, 5))}
    out = prepend_registers(batch, 13, 2)
    assert sorted(out) == ["loss_mask", "targets", "tokens", "trigger"]
    for key in ("tokens", "targets"):
        np.testing.assert_array_equal(out[key], np.concatenate([np.tile([13, 14], (3, 1)), batch[key]], 1))
    for key in ("loss_mask", "trigger"):
        assert out[key].dtype == bool
        np.testing.assert_array_equal(out[key], np.concatenate([np.zeros((3, 2), bool), batch[key]], 1))
    with pytest.raises(ValueError, match="count must be an int >= 0, got -1"):
        prepend_registers(batch, 13, -1)
    with pytest.raises(ValueError, match=r"batch has no key\(s\) \['trigger'\]"):
        prepend_registers({k: batch[k] for k in ("tokens", "targets", "loss_mask")}, 13, 2)
