"""Diagnostics on inputs with known answers, against numpy / scipy / finite differences."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy import stats

from tinytf import diagnostics as dg

B, N, T, S = 3, 5, 7, 11  # odd distinct sizes: a transposed axis cannot pass


def random_maps(key, shape=(B, N, T, S)):
    return jax.nn.softmax(jax.random.normal(jax.random.key(key), shape) * 2.0, -1)


# --------------------------------------------------------------------------- entropy / logits


def test_entropy_uniform_is_log_s_and_one_hot_is_zero():
    uniform = jnp.full((B, N, T, S), 1.0 / S)
    np.testing.assert_allclose(dg.attention_entropy(uniform), np.full(N, math.log(S)), rtol=1e-6)
    one_hot = jax.nn.one_hot(jnp.zeros((B, N, T), int) + 3, S)
    np.testing.assert_allclose(dg.attention_entropy(one_hot), np.zeros(N), atol=1e-7)


def test_entropy_matches_numpy_per_head_with_query_mask():
    w = np.asarray(random_maps(0))
    qm = np.random.default_rng(0).random((B, T)) > 0.4
    expected = []
    for h in range(N):
        rows = -(w[:, h] * np.log(w[:, h])).sum(-1)  # (B, T)
        expected.append(rows[qm].mean())
    np.testing.assert_allclose(dg.attention_entropy(w, query_mask=qm), expected, rtol=1e-5)


def test_entropy_causal_normalized_uniform_rows_are_one():
    causal = np.tril(np.ones((T, T), bool))
    uniform = causal / causal.sum(-1, keepdims=True)  # each query uniform over its visible keys
    w = np.broadcast_to(uniform, (B, N, T, T))
    np.testing.assert_allclose(dg.attention_entropy(w, is_causal=True, normalize=True), np.ones(N), rtol=1e-6)
    # without normalisation and skipping the first 4 queries: mean of log(i+1) over i >= 4
    np.testing.assert_allclose(dg.attention_entropy(w, is_causal=True, skip_first=4),
                               np.full(N, np.mean(np.log(np.arange(5, T + 1)))), rtol=1e-6)


def test_entropy_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"expected attention weights \(B, N, T, S\)"):
        dg.attention_entropy(jnp.ones((T, S)))
    with pytest.raises(ValueError, match="mask has shape"):
        dg.attention_entropy(random_maps(0), mask=jnp.ones((2, 3), bool))
    with pytest.raises(ValueError, match="query_mask has shape"):
        dg.attention_entropy(random_maps(0), query_mask=jnp.ones((S,), bool))


def test_max_attention_logit_matches_numpy_and_respects_mask():
    rng = np.random.default_rng(1)
    q, k = rng.normal(size=(B, T, N, 4)), rng.normal(size=(B, S, N, 4))
    logits = np.einsum("btnh,bsnh->bnts", q, k) / 2.0
    np.testing.assert_allclose(dg.max_attention_logit(q, k), np.abs(logits).max(), rtol=1e-5)
    np.testing.assert_allclose(dg.max_attention_logit(q, k, per_head=True), np.abs(logits).max((0, 2, 3)), rtol=1e-5)
    mask = np.arange(S) < 3
    np.testing.assert_allclose(dg.max_logit(logits, mask), np.abs(logits[..., :3]).max(), rtol=1e-5)
    with pytest.raises(ValueError, match="query"):
        dg.max_attention_logit(q, k[..., :3])


def test_entropy_stats_over_layers():
    maps = {"blocks.0.attn": jnp.full((B, N, T, S), 1.0 / S), "blocks.1.attn": jax.nn.one_hot(jnp.zeros((B, N, T), int), S)}
    st = dg.entropy_stats(maps)
    np.testing.assert_allclose(st["entropy_mean"], math.log(S) / 2, rtol=1e-6)
    np.testing.assert_allclose(st["entropy_min"], 0.0, atol=1e-7)
    assert set(st["per_head"]) == set(maps)


def test_training_metrics_run_under_jit():
    w = random_maps(2, (B, N, T, T))
    q = jax.random.normal(jax.random.key(3), (B, T, N, 4))
    f = jax.jit(lambda w, q: (dg.attention_entropy(w, is_causal=True, skip_first=2), dg.sink_rate({"a": w}),
                              dg.max_attention_logit(q, q), dg.entropy_stats({"a": w})["entropy_min"],
                              dg.bos_mass(w), dg.null_mass(w)))
    ent, rate, mx, emin, bos, null = f(w, q)
    np.testing.assert_allclose(ent, dg.attention_entropy(w, is_causal=True, skip_first=2), rtol=1e-6)
    np.testing.assert_allclose(rate, dg.sink_rate(w))
    np.testing.assert_allclose(mx, dg.max_attention_logit(q, q), rtol=1e-6)
    assert np.isfinite(emin) and np.isfinite(bos) and abs(float(null)) < 1e-5


# --------------------------------------------------------------------------- sinks


def test_sink_rate_map_on_first_token_is_100_and_uniform_is_0():
    on_bos = jax.nn.one_hot(jnp.zeros((B, N, T), int), T)
    assert float(dg.sink_rate({"l0": on_bos, "l1": on_bos})) == pytest.approx(100.0)
    uniform = jnp.full((B, N, T, T), 1.0 / T)  # alpha_0 = 1/7 < 0.3
    assert float(dg.sink_rate(uniform)) == 0.0
    # causal caveat: uniform causal rows give alpha_0 = mean_i 1/(i+1): 0.37 at T=7 (a "sink"), 0.07 at T=64
    for length, expected in ((7, 100.0), (64, 0.0)):
        causal = np.tril(np.ones((length, length)))
        w = np.broadcast_to(causal / causal.sum(-1, keepdims=True), (1, 2, length, length))
        assert float(dg.sink_scores(w)[0, 0]) == pytest.approx(np.mean(1.0 / np.arange(1, length + 1)), rel=1e-5)
        assert float(dg.sink_rate(w)) == expected


def test_sink_scores_match_gu_definition_brute_force():
    w = np.asarray(random_maps(4, (B, N, T, T)))
    for k in (0, 2):
        expected = np.zeros((B, N))
        for b in range(B):
            for h in range(N):
                expected[b, h] = np.mean([w[b, h, i, k] for i in range(k, T)])
        np.testing.assert_allclose(dg.sink_scores(w, k), expected, rtol=1e-5)
    eps = 0.15
    alpha = dg.sink_scores(w, 0)
    assert float(dg.sink_rate(w, eps=eps)) == pytest.approx(100 * float((alpha > eps).mean()))
    with pytest.raises(ValueError, match="k=7 is outside"):
        dg.sink_scores(w, 7)


def test_bos_mass_with_query_mask_and_null_mass():
    w = np.asarray(random_maps(5))
    qm = np.zeros(T, bool)
    qm[[1, 4]] = True
    assert float(dg.bos_mass(w, qm)) == pytest.approx(w[:, :, [1, 4], 0].mean(), rel=1e-5)
    np.testing.assert_allclose(dg.bos_mass(w, per_head=True), w[..., 0].mean((0, 2)), rtol=1e-5)
    half = w * 0.5  # a normalizer that keeps only half of the mass
    assert float(dg.null_mass(half)) == pytest.approx(0.5, rel=1e-5)
    assert float(dg.null_mass({"a": w, "b": half})) == pytest.approx(0.25, rel=1e-5)
    # fully masked rows (zero weights) are excluded when the mask is given
    masked = np.array(w)
    masked[:, :, 0, :] = 0.0
    row_ok = np.ones((1, 1, T, 1), bool)
    row_ok[:, :, 0] = False
    assert float(dg.null_mass(masked, mask=row_ok)) == pytest.approx(0.0, abs=1e-5)


def test_needle_mass_gathers_the_right_entry():
    w = np.asarray(random_maps(6))
    q_idx, n_idx = np.array([6, 0, 3]), np.array([10, 2, 5])
    expected = np.array([w[b, :, q_idx[b], n_idx[b]].mean() for b in range(B)])
    np.testing.assert_allclose(dg.needle_mass(w, q_idx, n_idx, per_example=True), expected, rtol=1e-5)
    assert float(dg.needle_mass(w, -1, 4)) == pytest.approx(w[:, :, -1, 4].mean(), rel=1e-5)


# --------------------------------------------------------------------------- rank collapse


def test_rank_residual_rank1_is_zero_and_random_in_unit_interval():
    row = np.random.default_rng(7).normal(size=(1, 1, S))
    identical = np.broadcast_to(row, (B, T, S))
    assert float(dg.rank_residual(identical)) == pytest.approx(0.0, abs=1e-6)
    assert float(dg.rank_residual(identical, norm="l1inf")) == pytest.approx(0.0, abs=1e-6)
    x = np.random.default_rng(8).normal(size=(B, T, S))
    r = np.asarray(dg.rank_residual(x, per_example=True))
    expected = [np.linalg.norm(xi - xi.mean(0)) / np.linalg.norm(xi) for xi in x]
    np.testing.assert_allclose(r, expected, rtol=1e-5)
    assert np.all((r > 0) & (r <= 1))
    # the best rank-1 approximation is at least as close as the token mean
    assert float(dg.rank_residual(x, reference="rank1")) <= float(dg.rank_residual(x)) + 1e-6
    assert float(dg.rank_residual(np.zeros((T, S)))) == 0.0


def test_rank_residual_l1inf_matches_numpy():
    x = np.random.default_rng(9).normal(size=(T, S))
    res = x - x.mean(0)

    def comp(m):
        return np.sqrt(np.abs(m).sum(0).max() * np.abs(m).sum(1).max())

    assert float(dg.rank_residual(x, norm="l1inf")) == pytest.approx(comp(res) / comp(x), rel=1e-5)
    with pytest.raises(ValueError, match="norm='l2'"):
        dg.rank_residual(x, norm="l2")


def test_singular_values_match_numpy():
    x = np.random.default_rng(10).normal(size=(B, T, S))
    np.testing.assert_allclose(dg.singular_values(x), np.linalg.svd(x, compute_uv=False), rtol=1e-4)
    assert np.allclose(dg.singular_values(x, normalize=True)[:, 0], 1.0)


# --------------------------------------------------------------------------- query maps / DETR


def test_query_maps_identical_give_cos_1_js_0_and_disjoint_give_0_ln2():
    Q = 5
    same = np.broadcast_to(np.asarray(random_maps(11, (B, N, 1, S))), (B, N, Q, S))
    sim = dg.query_map_similarity(same)
    assert float(sim["cosine"]) == pytest.approx(1.0, abs=1e-5)
    assert float(sim["js"]) == pytest.approx(0.0, abs=1e-6)
    disjoint = np.broadcast_to(np.eye(Q, S), (B, N, Q, S))
    sim = dg.query_map_similarity(disjoint)
    assert float(sim["cosine"]) == pytest.approx(0.0, abs=1e-7)
    assert float(sim["js"]) == pytest.approx(math.log(2), rel=1e-6)
    assert float(sim["entropy"]) == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError, match="at least 2"):
        dg.query_map_similarity(np.ones((B, N, 1, S)))


def test_js_divergence_matches_scipy():
    from scipy.spatial import distance

    p, q = np.random.default_rng(12).random((2, S))
    assert float(dg.js_divergence(p, q)) == pytest.approx(distance.jensenshannon(p, q) ** 2, rel=1e-4)


def test_query_embedding_diversity_and_positional_checks():
    e = np.random.default_rng(13).normal(size=(7, 16))
    assert float(dg.query_embedding_diversity(np.broadcast_to(e[:1], (7, 16)))) == pytest.approx(1.0, abs=1e-5)
    assert abs(float(dg.query_embedding_diversity(e))) < 0.5
    # DETR defaults (cell coordinates, temperature 1e4) stay below Nyquist; 2^k * pi on [0,1] aliases on 8x8
    assert not dg.sine_pe_aliasing(dg.sine_2d_frequencies(64))["nyquist_exceeded"]
    bad = dg.sine_pe_aliasing(np.pi * 2.0 ** np.arange(8), spacing=1 / 8)
    assert bad["nyquist_exceeded"] and bad["aliased_fraction"] == pytest.approx(4 / 8)
    from tinytf.positional import sine_2d

    good = dg.positional_encoding_similarity(np.asarray(sine_2d(8, 8, 64)), 8, 8)
    noise = dg.positional_encoding_similarity(np.random.default_rng(14).normal(size=(64, 64)), 8, 8)
    assert good["distance_correlation"] < -0.5 < noise["distance_correlation"]
    with pytest.raises(ValueError, match=r"expected \(64, D\)"):
        dg.positional_encoding_similarity(np.zeros((63, 8)), 8, 8)


def test_detr_query_report_picks_last_cross_attention_layer():
    Q = 4
    maps = {"decoder.0.cross_attn": np.ones((B, N, Q, 16)) / 16, "decoder.1.cross_attn": np.broadcast_to(np.eye(Q, 16), (B, N, Q, 16)),
            "decoder.1.self_attn": np.ones((B, N, Q, Q)) / Q}
    rep = dg.detr_query_report(maps, query_embed=np.eye(Q, 8), pos_embed=np.eye(16), grid=(4, 4))
    assert rep["map_cosine"] == pytest.approx(0.0, abs=1e-6) and rep["query_embedding_cosine"] == pytest.approx(0.0)
    assert rep["uniform_entropy"] == pytest.approx(math.log(16)) and "pe_max_cosine" in rep


# --------------------------------------------------------------------------- cross-layer


def test_cross_layer_similarity_identical_and_disjoint_layers():
    a = np.broadcast_to(np.eye(T), (B, N, T, T))
    b = np.broadcast_to(np.roll(np.eye(T), 1, axis=1), (B, N, T, T))
    out = dg.cross_layer_similarity({"l0": a, "l1": a, "l2": b})
    js, cos = np.asarray(out["js"]), np.asarray(out["cosine"])
    assert out["layers"] == ["l0", "l1", "l2"]
    np.testing.assert_allclose(js[0, 1], 0.0, atol=1e-6)
    np.testing.assert_allclose(js[0, 2], math.log(2), rtol=1e-6)
    np.testing.assert_allclose(cos, [[1, 1, 0], [1, 1, 0], [0, 0, 1]], atol=1e-6)
    with pytest.raises(ValueError, match="different"):
        dg.cross_layer_similarity({"a": a, "b": np.ones((B, N, T, S)) / S})


# --------------------------------------------------------------------------- rollout / attribution


def test_rollout_of_identity_is_identity_and_matches_numpy():
    eye = np.broadcast_to(np.eye(T), (B, N, T, T))
    np.testing.assert_allclose(dg.attention_rollout([eye, eye, eye]), np.broadcast_to(np.eye(T), (B, T, T)), atol=1e-6)
    maps = [np.asarray(random_maps(i, (B, N, T, T))) for i in range(3)]
    expected = None
    for m in maps:
        a = 0.5 * m.mean(1) + 0.5 * np.eye(T)
        a = a / a.sum(-1, keepdims=True)
        expected = a if expected is None else a @ expected
    np.testing.assert_allclose(dg.attention_rollout({"a": maps[0], "b": maps[1], "c": maps[2]}), expected, rtol=1e-5)
    with pytest.raises(ValueError, match="square"):
        dg.attention_rollout([np.ones((B, N, T, S))])


def _linear_classifier():
    """logits = [0, sum_t x_t . v]: only tokens with x_t . v != 0 carry evidence."""
    v = jnp.arange(1.0, 4.0)

    def fn(e):  # (B, T, 3) -> (B, 2)
        score = jnp.einsum("btd,d->b", e, v)
        return jnp.stack([jnp.zeros_like(score), score], -1)

    return fn


def test_grad_times_input_of_linear_model_is_exact():
    fn = _linear_classifier()
    x = jax.random.normal(jax.random.key(15), (B, T, 3))
    expected = np.einsum("btd,d->bt", np.asarray(x), np.arange(1.0, 4.0))
    np.testing.assert_allclose(dg.grad_times_input(fn, x, target=jnp.ones(B, int)), expected, rtol=1e-5)
    np.testing.assert_allclose(dg.grad_times_input(fn, x, target=jnp.zeros(B, int)), 0.0, atol=1e-7)


def test_aopc_of_perfect_attribution_beats_random():
    rng = np.random.default_rng(16)
    x = np.zeros((32, T, 3), np.float32)
    relevant = np.zeros((32, T), bool)
    for b in range(32):  # two evidence tokens per example, the rest is weak noise
        idx = rng.choice(T, 2, replace=False)
        relevant[b, idx] = True
        x[b, idx] = rng.uniform(0.5, 1.0, (2, 3))
    x += rng.normal(scale=0.01, size=x.shape).astype(np.float32)
    fn = _linear_classifier()
    perfect = dg.grad_times_input(fn, jnp.asarray(x), absolute=True)
    random_scores = rng.random((32, T))
    ks = range(1, 4)
    drops_perfect = dg.deletion_curve(fn, x, perfect, ks, baseline=0.0)
    drops_random = dg.deletion_curve(fn, x, random_scores, ks, baseline=0.0)
    assert dg.aopc(drops_perfect) > dg.aopc(drops_random) + 0.1
    assert dg.precision_at_k(perfect, relevant) == 1.0
    assert dg.precision_at_k(random_scores, relevant) < 0.7
    # candidates=False tokens are never deleted: deleting nothing changes nothing
    none = dg.deletion_curve(fn, x, perfect, ks, baseline=0.0, candidates=np.zeros(T, bool))
    np.testing.assert_allclose(none, 0.0, atol=1e-6)
    report = dg.attribution_report(fn, x, {"perfect": perfect, "random": random_scores}, ks, baseline=0.0,
                                   reference="perfect", relevant=relevant)
    assert report["perfect"]["tau"] == pytest.approx(1.0) and report["random"]["aopc"] < report["perfect"]["aopc"]


def test_deletion_curve_on_token_ids_uses_the_mask_token():
    table = jnp.array([[0.0, 0.0], [0.0, 3.0], [0.0, -1.0]])  # token 0 = MASK (no evidence)

    def fn(ids):
        return table[ids].sum(1)  # (B, 2)

    ids = np.array([[1, 2, 2, 1, 1]])
    scores = np.array([[5.0, 0.0, 0.0, 4.0, 3.0]])  # the three "1" tokens first
    drops = dg.deletion_curve(fn, ids, scores, [1, 3], baseline=0, per_example=True)
    p = jax.nn.softmax(jnp.array([0.0, 9.0 - 2.0]))[1]
    p3 = jax.nn.softmax(jnp.array([0.0, -2.0]))[1]
    np.testing.assert_allclose(drops[0, 1], p - p3, rtol=1e-5)
    with pytest.raises(ValueError, match="scores has shape"):
        dg.deletion_curve(fn, ids, scores[:, :3], [1], baseline=0)


def test_kendall_tau_matches_scipy_with_ties_and_candidates():
    rng = np.random.default_rng(17)
    a, b = rng.integers(0, 4, (B, S)).astype(float), rng.normal(size=(B, S))
    ours = dg.kendall_tau(a, b)
    np.testing.assert_allclose(ours, [stats.kendalltau(a[i], b[i]).statistic for i in range(B)], rtol=1e-10)
    keep = np.arange(S) > 0
    np.testing.assert_allclose(dg.kendall_tau(a, b, candidates=keep),
                               [stats.kendalltau(a[i, 1:], b[i, 1:]).statistic for i in range(B)], rtol=1e-10)
    assert dg.kendall_tau(np.arange(5.0), np.arange(5.0)[::-1]) == pytest.approx(-1.0)


# --------------------------------------------------------------------------- head importance / pruning


class HeadGate(nnx.Variable):
    """Stand-in for tinytf.nn.HeadGate (same pattern: a non-Param Variable of ones (N,))."""


class TinyAttention(nnx.Module):
    """Minimal gated multi-head self-attention: the contract's pattern, nothing more."""

    def __init__(self, d, n, *, rngs):
        self.n = n
        self.qkv = nnx.Linear(d, 3 * d, rngs=rngs)
        self.out = nnx.Linear(d, d, rngs=rngs)
        self.head_gate = HeadGate(jnp.ones((n,)))

    def __call__(self, x):
        Bx, Tx, D = x.shape
        q, k, v = jnp.split(self.qkv(x).reshape(Bx, Tx, 3 * self.n, D // self.n), 3, axis=2)  # (B,T,N,H) each
        w = jax.nn.softmax(jnp.einsum("btnh,bsnh->bnts", q, k) / math.sqrt(D // self.n), -1)
        heads = jnp.einsum("bnts,bsnh->btnh", w, v) * self.head_gate[...][:, None]  # gate each head
        return self.out(heads.reshape(Bx, Tx, D))


class TinyModel(nnx.Module):
    def __init__(self, d=12, n=3, layers=2, classes=3, *, seed=0):
        rngs = nnx.Rngs(seed)
        self.blocks = nnx.List([TinyAttention(d, n, rngs=rngs) for _ in range(layers)])
        self.head = nnx.Linear(d, classes, rngs=rngs)

    def __call__(self, x):
        for blk in self.blocks:
            x = x + blk(x)
        return self.head(x.mean(1))


def per_example_loss(model, batch):
    x, y = batch
    logp = jax.nn.log_softmax(model(x), -1)
    return -jnp.take_along_axis(logp, y[:, None], -1)[:, 0]  # (B,)


def make_batches(n_batches=2, batch=4, seed=1, d=12):
    rng = np.random.default_rng(seed)
    return [(jnp.asarray(rng.normal(size=(batch, 5, d)), jnp.float32), jnp.asarray(rng.integers(0, 3, batch)))
            for _ in range(n_batches)]


def test_head_importance_matches_finite_differences():
    model, batches = TinyModel(), make_batches()
    got = dg.head_importance(model, per_example_loss, batches, normalize=False, gate_type=HeadGate)
    assert list(got) == ["blocks.0", "blocks.1"]  # module paths, like capture_attention's names
    eps = 1e-3
    for name, var in zip(got, [model.blocks[0].head_gate, model.blocks[1].head_gate]):
        for h in range(3):
            grads = []
            for batch in batches:
                e = np.zeros(3, np.float32)
                e[h] = eps
                var[...] = jnp.ones(3) + e
                lp = np.asarray(per_example_loss(model, batch), np.float64)
                var[...] = jnp.ones(3) - e
                lm = np.asarray(per_example_loss(model, batch), np.float64)
                var[...] = jnp.ones(3)
                grads.append((lp - lm) / (2 * eps))
            fd = np.abs(np.concatenate(grads)).mean()  # per-example |grad|, then the mean
            assert float(got[name][h]) == pytest.approx(fd, rel=2e-2, abs=1e-4)
    norm = dg.head_importance(model, per_example_loss, batches, gate_type=HeadGate)
    for v in norm.values():
        assert float(jnp.linalg.norm(v)) == pytest.approx(1.0, rel=1e-5)


def test_head_importance_is_zero_for_a_head_cut_from_the_output():
    model = TinyModel(layers=1)
    H = 4
    kernel = model.blocks[0].out.kernel
    kernel[...] = kernel[...].at[H:2 * H].set(0.0)  # head 1's output never reaches the loss
    got = dg.head_importance(model, per_example_loss, make_batches(), gate_type=HeadGate)
    name = next(iter(got))
    assert float(got[name][1]) == 0.0 and float(got[name][0]) > 0 and float(got[name][2]) > 0


def test_scalar_loss_counts_each_batch_as_one_example():
    model, batches = TinyModel(), make_batches()
    per_batch = dg.head_importance(model, lambda m, b: per_example_loss(m, b).mean(), batches,
                                   normalize=False, gate_type=HeadGate)
    per_ex = dg.head_importance(model, per_example_loss, batches, normalize=False, gate_type=HeadGate)
    for name in per_ex:  # |mean grad| <= mean |grad|
        assert np.all(np.asarray(per_batch[name]) <= np.asarray(per_ex[name]) + 1e-6)


def test_masking_and_pruning_zero_heads_changes_nothing_and_restores():
    model, (x, _) = TinyModel(), make_batches(1)[0]
    before = model(x)
    names = list(dg.head_gates(model, gate_type=HeadGate))
    order = [(names[0], 0), (names[1], 2)]
    prev = dg.prune_heads(model, order, 0.0, gate_type=HeadGate)
    np.testing.assert_array_equal(model(x), before)
    dg.prune_heads(model, order, 2 / 6, gate_type=HeadGate)
    gates = dg.head_gates(model, gate_type=HeadGate)
    assert gates[names[0]].tolist() == [0, 1, 1] and gates[names[1]].tolist() == [1, 1, 0]
    assert not np.allclose(model(x), before)
    dg.set_head_mask(model, prev, gate_type=HeadGate)
    np.testing.assert_array_equal(model(x), before)
    with dg.head_mask(model, {names[0]: jnp.zeros(3)}, gate_type=HeadGate):
        # a fully masked layer is the identity plus the output bias
        blk = model.blocks[0]
        np.testing.assert_allclose(blk(x), jnp.broadcast_to(blk.out.bias[...], x.shape), atol=1e-6)
    np.testing.assert_array_equal(model(x), before)
    with pytest.raises(ValueError, match="unknown layers"):
        dg.set_head_mask(model, {"nope": jnp.ones(3)}, gate_type=HeadGate)
    with pytest.raises(ValueError, match="expected \\(3,\\)"):
        dg.set_head_mask(model, {names[0]: jnp.ones(2)}, gate_type=HeadGate)


def test_pruning_curves_all_strategies():
    model, batches = TinyModel(), make_batches()
    x, y = batches[0]
    before = model(x)

    def eval_fn(m):
        return float(-per_example_loss(m, (x, y)).mean())

    fractions = [0.0, 0.5, 1.0]
    imp = dg.head_importance(model, per_example_loss, batches, gate_type=HeadGate)
    curves = {s: dg.pruning_curve(model, eval_fn, s, fractions, importance=imp, gate_type=HeadGate)
              for s in ("importance", "reverse")}
    curves["random"] = dg.pruning_curve(model, eval_fn, "random", fractions, num_random=3, gate_type=HeadGate)
    curves["iterative"] = dg.pruning_curve(model, eval_fn, "iterative", fractions, loss_fn=per_example_loss,
                                           batches=batches, gate_type=HeadGate)
    full = eval_fn(model)
    for name, c in curves.items():
        assert c.shape == (3,) and c[0] == pytest.approx(full), name
        assert c[-1] == pytest.approx(curves["importance"][-1]), name  # everything pruned: same model
    np.testing.assert_array_equal(model(x), before)  # gates restored
    assert dg.pruning_curve(model, eval_fn, "random", fractions, num_random=3, return_all=True,
                            gate_type=HeadGate).shape == (3, 3)
    with pytest.raises(ValueError, match="needs importance="):
        dg.pruning_curve(model, eval_fn, "importance", fractions, gate_type=HeadGate)
    with pytest.raises(ValueError, match="strategy='best'"):
        dg.pruning_curve(model, eval_fn, "best", fractions, gate_type=HeadGate)


def test_iterative_pruning_renormalises_over_surviving_heads():
    """One head per step: the curve equals a greedy reference that re-scores with finite differences
    and normalises each layer over its surviving heads only (pruned heads never count)."""
    model, batches = TinyModel(seed=7), make_batches(seed=8)  # a model where the two normalisations disagree
    x, y = batches[0]

    def eval_fn(m):
        return float(-per_example_loss(m, (x, y)).mean())

    names = list(dg.head_gates(model, gate_type=HeadGate))
    alive = {n: np.ones(3, np.float32) for n in names}
    order = []
    for _ in range(6):
        raw = {}
        for n in names:  # E|dL/dxi| by central differences of the per-example loss
            raw[n] = np.zeros(3)
            for h in range(3):
                diffs = []
                for b in batches:
                    per = []
                    for eps in (1e-3, -1e-3):
                        g = {k: v.copy() for k, v in alive.items()}
                        g[n][h] += eps
                        dg.set_head_mask(model, g, gate_type=HeadGate)
                        per.append(np.asarray(per_example_loss(model, b), np.float64))
                    diffs.append(np.abs(per[0] - per[1]) / 2e-3)
                raw[n][h] = np.concatenate(diffs).mean()
        best = min(((raw[n][h] * alive[n][h] / np.linalg.norm(raw[n] * alive[n]), n, h)
                    for n in names for h in range(3) if alive[n][h]))
        order.append(best[1:])
        alive[best[1]][best[2]] = 0.0
    dg.set_head_mask(model, {n: np.ones(3, np.float32) for n in names}, gate_type=HeadGate)
    fractions = [k / 6 for k in range(7)]
    got = dg.pruning_curve(model, eval_fn, "iterative", fractions, loss_fn=per_example_loss, batches=batches,
                           gate_type=HeadGate)
    want = dg.pruning_curve(model, eval_fn, order, fractions, gate_type=HeadGate)
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_importance_order_least_important_first():
    order = dg.importance_order({"a": np.array([0.5, 0.1]), "b": np.array([0.3])})
    assert order == [("a", 1), ("b", 0), ("a", 0)]


# --------------------------------------------------------------------------- with the real tinytf layers


def test_real_encoder_capture_importance_rollout_and_max_logit():
    from tinytf.capture import capture_attention
    from tinytf.nn import Encoder

    enc = Encoder(2, 12, 3, final_norm=False, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(18), (B, T, 12))
    maps, logits = capture_attention(enc, x, with_logits=True)
    assert list(maps) == ["layers.0.attn", "layers.1.attn"]
    roll = dg.attention_rollout(maps)
    np.testing.assert_allclose(roll.sum(-1), 1.0, rtol=1e-5)
    assert float(dg.max_logit(logits)) == pytest.approx(max(float(jnp.abs(v).max()) for v in logits.values()))

    def loss(model, batch):
        return (model(batch) ** 2).mean((1, 2))  # (B,) per-example loss

    imp = dg.head_importance(enc, loss, [x])  # default gate type: tinytf.nn.HeadGate
    assert list(imp) == list(maps) and all(v.shape == (3,) for v in imp.values())
    before = enc(x)
    with dg.head_mask(enc, {"layers.1.attn": jnp.zeros(3)}):
        assert not np.allclose(enc(x), before)
    np.testing.assert_array_equal(enc(x), before)


# --------------------------------------------------------------------------- laws and strictness


def test_metrics_do_not_rely_on_silent_rank_promotion(strict_rank):
    w = random_maps(19, (B, N, T, T))
    x = jax.random.normal(jax.random.key(20), (B, T, 8))
    dg.attention_entropy(w, is_causal=True, skip_first=2, normalize=True, query_mask=np.ones(T, bool),
                         mask=np.ones((1, 1, T, T), bool))
    dg.max_attention_logit(x.reshape(B, T, 2, 4), x.reshape(B, T, 2, 4), mask=np.ones((T, T), bool))
    dg.sink_rate({"a": w, "b": w}), dg.sink_scores(w, 2), dg.bos_mass(w, np.ones(T, bool)), dg.null_mass(w)
    dg.needle_mass(w, 3, np.array([1, 2, 3])), dg.rank_residual(x, norm="l1inf", reference="rank1")
    dg.singular_values(x, normalize=True), dg.cross_layer_similarity([w, w]), dg.query_map_similarity(w)
    dg.attention_rollout([w, w]), dg.grad_times_input(lambda e: e.sum(1)[:, :2], x)


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**16), sharp=st.floats(0.1, 20.0))
def test_entropy_and_js_bounds_hold_for_random_maps(seed, sharp):
    w = np.asarray(random_maps(seed, (2, 3, 5, 7)), np.float64) ** sharp  # float64: no row underflows to 0
    w = (w / w.sum(-1, keepdims=True)).astype(np.float32)
    ent = np.asarray(dg.attention_entropy(w))
    assert np.all(ent >= -1e-6) and np.all(ent <= math.log(7) + 1e-5)
    js = np.asarray(dg.js_divergence(w[0], w[1]))
    np.testing.assert_allclose(js, np.asarray(dg.js_divergence(w[1], w[0])), atol=1e-6)  # symmetric
    assert np.all(js >= 0) and np.all(js <= math.log(2) + 1e-6)
    sq = np.asarray(random_maps(seed, (2, 3, 5, 7)), np.float64)[..., :5] ** sharp
    sq = (sq / sq.sum(-1, keepdims=True)).astype(np.float32)  # (2, 3, 5, 5) square maps
    roll = np.asarray(dg.attention_rollout([sq, sq]))
    np.testing.assert_allclose(roll.sum(-1), 1.0, rtol=1e-5)  # rollout keeps rows stochastic
