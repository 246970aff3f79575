"""Diagnostics of the vision lessons against independent references: registers, patches, attention flow."""

import numpy as np
import pytest

from tinytf import diagnostics as dg
from tinytf.models import LinearPatchEmbed, patchify, unpatchify

RNG = np.random.default_rng(5)


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


# ------------------------------------------------------------------------------- registers


def test_norm_outliers_match_numpy_on_vectors_and_norms():
    tokens = RNG.normal(size=(7, 11, 5))
    tokens[2, 3] *= 10.0  # one outlier token
    norms = np.linalg.norm(tokens, axis=-1)
    got = dg.norm_outliers(tokens)
    assert got["max_over_median"] == pytest.approx(norms.max() / np.median(norms))
    assert got["outlier_share"] == pytest.approx(np.mean(norms > 2 * np.median(norms)))
    assert dg.norm_outliers(norms, factor=3.0)["outlier_share"] == pytest.approx(np.mean(norms > 3 * np.median(norms)))
    assert dg.norm_outliers(np.ones((3, 5)))["outlier_share"] == 0.0
    with pytest.raises(ValueError, match=r"expected \(B, P, D\) vectors or \(B, P\) norms"):
        dg.norm_outliers(np.ones(5))
    with pytest.raises(ValueError, match="median token norm is 0"):
        dg.norm_outliers(np.zeros((2, 3)))


def test_register_attention_matches_a_loop_and_uniform_share():
    B, N, R, P = 3, 5, 2, 7
    T = 1 + R + P
    maps = {"blocks.0.attn": softmax(RNG.normal(size=(B, N, T, T))), "blocks.1.attn": np.full((B, N, T, T), 1 / T)}
    got = dg.register_attention(maps, R)
    a = maps["blocks.0.attn"].mean(1)
    expected = {"cls_to_cls": a[:, 0, 0].mean(), "cls_to_registers": sum(a[:, 0, j] for j in (1, 2)).mean(),
                "patches_to_registers": np.mean([[a[b, i, 1] + a[b, i, 2] for i in range(3, T)] for b in range(B)]),
                "patches_to_cls": np.mean([[a[b, i, 0] for i in range(3, T)] for b in range(B)])}
    for k, v in expected.items():
        assert got["blocks.0.attn"][k] == pytest.approx(v, rel=1e-6), k
    uniform = got["blocks.1.attn"]
    assert uniform["cls_to_registers"] == pytest.approx(R / T) and uniform["patches_to_registers"] == pytest.approx(R / T)
    assert list(dg.register_attention(maps, R, layers=["blocks.1.attn"])) == ["blocks.1.attn"]
    assert dg.register_attention(maps, 0)["blocks.0.attn"]["cls_to_registers"] == 0.0
    with pytest.raises(ValueError, match="num_registers must be an int >= 0"):
        dg.register_attention(maps, -1)
    with pytest.raises(ValueError, match=r"T > 1 \+ num_registers = 10"):
        dg.register_attention(maps, 9)


# --------------------------------------------------------------------------------- patches


def test_patchify_matches_a_loop_and_unpatchify_inverts_it():
    B, gh, gw, p, C = 2, 3, 5, 4, 3
    images = RNG.normal(size=(B, gh * p, gw * p, C)).astype(np.float32)
    patches = np.asarray(patchify(images, p))
    assert patches.shape == (B, gh * gw, p * p * C)
    for i in range(gh):
        for j in range(gw):
            np.testing.assert_array_equal(patches[:, i * gw + j], images[:, i * p:(i + 1) * p, j * p:(j + 1) * p]
                                          .reshape(B, -1))
    np.testing.assert_array_equal(np.asarray(unpatchify(patches, p, (gh, gw))), images)
    square = RNG.normal(size=(B, 3 * p, 3 * p, 1))
    np.testing.assert_array_equal(np.asarray(unpatchify(patchify(square, p), p)), square)
    with pytest.raises(ValueError, match="not divisible by patch_size=5"):
        patchify(images, 5)
    with pytest.raises(ValueError, match="do not fit a 4x4 grid"):
        unpatchify(patches, p, (4, 4))


# ---------------------------------------------------------------------------- attention flow


def flow_graph(maps, residual=0.5):
    """The layered graph of Abnar & Zuidema, written out with loops: {(u, v): capacity}, node (layer, token)."""
    mats = [np.asarray(m, np.float64).mean(1) for m in maps.values()]  # (B, T, T) each
    graphs = []
    for b in range(mats[0].shape[0]):
        edges = {}
        for l, a in enumerate(mats):
            T = a.shape[-1]
            for i in range(T):
                row = [residual * (i == j) + (1 - residual) * a[b, i, j] for j in range(T)]
                for j in range(T):
                    edges[((l, j), (l + 1, i))] = row[j] / sum(row)
        graphs.append(edges)
    return graphs


def brute_force_min_cut(edges, source, sink):
    """Max-flow = min-cut: try every set of nodes that holds the source and not the sink."""
    nodes = sorted({u for u, _ in edges} | {v for _, v in edges})
    free = [n for n in nodes if n not in (source, sink)]
    best = np.inf
    for bits in range(2 ** len(free)):
        side = {source} | {n for k, n in enumerate(free) if bits >> k & 1}
        best = min(best, sum(c for (u, v), c in edges.items() if u in side and v not in side))
    return best


def edmonds_karp(edges, source, sink):
    """Shortest augmenting paths on float capacities (Edmonds & Karp 1972), plain Python."""
    from collections import deque
    residual = {}
    for (u, v), c in edges.items():
        residual.setdefault(u, {}).setdefault(v, 0.0)
        residual.setdefault(v, {}).setdefault(u, 0.0)
        residual[u][v] += c
    total = 0.0
    while True:
        parent, queue = {source: None}, deque([source])
        while queue and sink not in parent:
            u = queue.popleft()
            for v, c in residual[u].items():
                if c > 1e-15 and v not in parent:
                    parent[v] = u
                    queue.append(v)
        if sink not in parent:
            return total
        path, v = [], sink
        while parent[v] is not None:
            path.append((parent[v], v))
            v = parent[v]
        push = min(residual[u][v] for u, v in path)
        for u, v in path:
            residual[u][v] -= push
            residual[v][u] += push
        total += push


@pytest.mark.parametrize("L,T", [(2, 3), (3, 3), (2, 4)])
def test_attention_flow_matches_brute_force_min_cut(L, T):
    maps = {f"blocks.{l}.attn": softmax(2 * RNG.normal(size=(2, 2, T, T))) for l in range(L)}
    got = dg.attention_flow(maps, output=1)
    for b, edges in enumerate(flow_graph(maps)):
        for j in range(T):
            assert got[b, j] == pytest.approx(brute_force_min_cut(edges, (0, j), (L, 1)), abs=1e-5), (b, j)


def test_attention_flow_matches_edmonds_karp_and_closed_forms():
    B, N, T = 3, 4, 9
    maps = {f"blocks.{l}.attn": softmax(3 * RNG.normal(size=(B, N, T, T))) for l in range(4)}
    got = dg.attention_flow(maps)
    for b, edges in enumerate(flow_graph(maps)):
        np.testing.assert_allclose(got[b], [edmonds_karp(edges, (0, j), (4, 0)) for j in range(T)], atol=1e-5)
    assert np.all(got >= 0) and np.all(got <= 1 + 1e-6)
    np.testing.assert_allclose(dg.attention_flow(maps, normalize=True), got / got.sum(-1, keepdims=True), atol=1e-12)
    # One layer: the flow is the single edge, the rollout itself. Two layers: disjoint two-edge paths through
    # every middle token k, so flow = sum_k min(A'_1[k, j], A'_2[0, k]).
    one = {"a": maps["blocks.0.attn"]}
    np.testing.assert_allclose(dg.attention_flow(one), np.asarray(dg.attention_rollout(one))[:, 0], atol=1e-5)
    two = {k: maps[k] for k in ("blocks.0.attn", "blocks.1.attn")}
    a1, a2 = (0.5 * np.eye(T) + 0.5 * two[k].mean(1) for k in two)
    a1, a2 = a1 / a1.sum(-1, keepdims=True), a2 / a2.sum(-1, keepdims=True)
    np.testing.assert_allclose(dg.attention_flow(two), np.minimum(a1, a2[:, 0, :, None]).sum(1), atol=1e-5)


def test_attention_flow_rejects_bad_input():
    maps = {"a": softmax(RNG.normal(size=(1, 1, 3, 3)))}
    with pytest.raises(ValueError, match="output=3"):
        dg.attention_flow(maps, output=3)
    with pytest.raises(ValueError, match="residual=2"):
        dg.attention_flow(maps, residual=2)
    with pytest.raises(ValueError, match="square self-attention"):
        dg.attention_flow({"a": np.ones((1, 1, 3, 4)) / 4})


# ------------------------------------------------------------------------------- attribution report


def _loop_report(weights, x, scores, relevant, ks):
    """Independent reference: per-example deletion in numpy, precision@k and Kendall tau by plain loops."""
    drops = []
    for b in range(x.shape[0]):
        logits0 = (x[b] @ weights).sum(0)
        y = int(np.argmax(logits0))
        order = sorted(range(x.shape[1]), key=lambda t: -scores[b, t])  # stable: ties keep index order
        row = []
        for k in ks:
            xk = x[b].copy()
            xk[order[:k]] = 0.0
            row.append(softmax(logits0)[y] - softmax((xk @ weights).sum(0))[y])
        drops.append(row)
    drops = np.array(drops)
    prec = []
    for b in range(x.shape[0]):
        k = int(relevant[b].sum())
        if k:
            top = sorted(range(x.shape[1]), key=lambda t: -scores[b, t])[:k]
            prec.append(np.mean([relevant[b, t] for t in top]))
    return drops, float(np.mean(prec))


def _tau_loop(a, b):
    from scipy.stats import kendalltau
    return float(np.nanmean([kendalltau(a[i], b[i]).statistic for i in range(a.shape[0])]))


def test_attribution_report_pairs_and_subset_match_loops():
    import jax.numpy as jnp
    B, T, D, C, n = 11, 7, 3, 5, 5
    weights = RNG.normal(size=(D, C))
    x = RNG.normal(size=(B, T, D)).astype(np.float32)
    relevant = RNG.random((B, T)) < 0.3
    a, b = RNG.random((B, T)), RNG.random((B, T))
    cheap = np.round(RNG.random((n, T)), 1)  # given on the first n only, with ties
    ks = [1, 2, 3]

    def fn(inputs):
        return (inputs @ jnp.asarray(weights, jnp.float32)).sum(1)

    rep = dg.attribution_report(fn, x, {"a": a, "b": b, "cheap": cheap}, ks, baseline=0.0, relevant=relevant,
                                pairs=[("a", "b"), ("cheap", "a")], subset=n)
    assert set(rep["cheap"]) == {"subset"} and set(rep["a"]) >= {"aopc", "drops", "precision_at_k", "subset"}
    for name, s in (("a", a), ("b", b)):
        drops, prec = _loop_report(weights, x.astype(np.float64), s, relevant, ks)
        np.testing.assert_allclose(rep[name]["drops"], drops.mean(0), atol=1e-5)
        assert rep[name]["aopc"] == pytest.approx(drops.mean(), abs=1e-5)
        assert rep[name]["precision_at_k"] == pytest.approx(prec)
        sub_drops, sub_prec = _loop_report(weights, x[:n].astype(np.float64), s[:n], relevant[:n], ks)
        assert rep[name]["subset"]["aopc"] == pytest.approx(sub_drops.mean(), abs=1e-5)
        assert rep[name]["subset"]["precision_at_k"] == pytest.approx(sub_prec)
    drops, prec = _loop_report(weights, x[:n].astype(np.float64), cheap, relevant[:n], ks)
    assert rep["cheap"]["subset"]["aopc"] == pytest.approx(drops.mean(), abs=1e-5)
    assert rep["cheap"]["subset"]["precision_at_k"] == pytest.approx(prec)
    assert rep["a"]["tau_vs"]["b"] == pytest.approx(_tau_loop(a, b))
    assert rep["a"]["subset"]["tau_vs"]["b"] == pytest.approx(_tau_loop(a[:n], b[:n]))
    assert rep["cheap"]["subset"]["tau_vs"]["a"] == pytest.approx(_tau_loop(cheap, a[:n]))
    with pytest.raises(ValueError, match="subset=12"):
        dg.attribution_report(fn, x, {"a": a}, ks, baseline=0.0, subset=12)
    with pytest.raises(ValueError, match=r"attributions\['cheap'\] has shape \(5, 7\)"):
        dg.attribution_report(fn, x, {"cheap": cheap}, ks, baseline=0.0)
    with pytest.raises(ValueError, match="pairs has"):
        dg.attribution_report(fn, x, {"a": a}, ks, baseline=0.0, pairs=[("a", "z")])


def test_linear_patch_embed_is_a_matrix_on_each_flattened_patch():
    from flax import nnx
    p, C, D = 3, 2, 5
    embed = LinearPatchEmbed(p, C, D, rngs=nnx.Rngs(7))
    images = RNG.normal(size=(2, 2 * p, 3 * p, C)).astype(np.float32)
    w, b = np.asarray(embed.proj.kernel[...]), np.asarray(embed.proj.bias[...])
    expected = np.stack([[images[n, i * p:(i + 1) * p, j * p:(j + 1) * p].reshape(-1) @ w + b
                          for i in range(2) for j in range(3)] for n in range(2)])
    np.testing.assert_allclose(np.asarray(embed(images)), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="C=2"):
        embed(images[..., :1])
