"""Exercises 7-11 (lessons rank-collapse, entropy-collapse, attention-sinks, dilution)."""

from __future__ import annotations

import numpy as np

from ._build import calls, exercise, patched
from ._gen import causal, distinct, key_mask, normal, softmax_rows


# ----------------------------------------------------------------------------- 7. rank residual
def _near_rank_one(rng, b=3, t=5, d=7, noise=0.05):
    shared = normal(rng, b, 1, d)
    return {"x": (shared + normal(rng, b, t, d, scale=noise)).astype(np.float32)}


on_residual = calls("relative_residual")
RANK = exercise("07_rank", "relative residual: how far tokens are from all-equal", "rank-collapse", checks=(
    on_residual.check("random x (3, 5, 7)", lambda rng: {"x": normal(rng, 3, 5, 7)}),
    on_residual.check(
        "tokens that are all equal give 0",
        lambda rng: {"x": np.repeat(normal(rng, 3, 1, 7), 5, axis=1)},
        atol=1e-6,
    ),
    on_residual.check("tokens near a shared vector (small residual)", _near_rank_one),
    on_residual.hidden(
        "random sizes, nonzero mean",
        lambda rng: {"x": (normal(rng, *distinct(rng, 3, (2, 5, 7, 11))) + 1.5).astype(np.float32)},
    ),
    on_residual.hidden("near rank one", lambda rng: _near_rank_one(rng, 2, 11, 5, noise=0.2)),
), mutants=(
    patched(
        "mean_over_features",
        "subtracted the mean over features; rank collapse compares each token with the mean token, the mean over "
        "T (axis 1)",
        ("x.mean(axis=1, keepdims=True)", "x.mean(axis=2, keepdims=True)"),
    ),
    patched(
        "scalar_mean",
        "subtracted one scalar mean; subtract the mean token (a D-vector, the mean over T)",
        ("x.mean(axis=1, keepdims=True)", "x.mean(axis=(1, 2), keepdims=True)"),
    ),
    patched(
        "not_relative",
        "forgot to divide by ||X||_F: the residual is relative",
        ("    return residual / np.sqrt(np.sum(x**2, axis=(1, 2)))", "    return residual"),
    ),
    patched(
        "squared",
        "returned a ratio of squared norms; take square roots (Frobenius norms)",
        (
            "    return residual / np.sqrt(np.sum(x**2, axis=(1, 2)))",
            "    return residual**2 / np.sum(x**2, axis=(1, 2))",
        ),
    ),
    patched(
        "batch_mean",
        "returned one number for the whole batch; return one residual per example, shape (B,)",
        (
            "    return residual / np.sqrt(np.sum(x**2, axis=(1, 2)))",
            "    return np.mean(residual / np.sqrt(np.sum(x**2, axis=(1, 2))))",
        ),
    ),
))


# ----------------------------------------------------------------------------- 8. entropy
def _attention_maps(rng, b=2, n=3, t=5, s=7, masked=False, scale=2.0):
    logits = rng.standard_normal((b, n, t, s)) * scale
    mask = key_mask(rng, (b, n, t, s), p=0.6) if masked else None
    return softmax_rows(logits, mask).astype(np.float32)


def _query_mask(rng, b, t):
    q = rng.random((b, t)) < 0.6
    q[:, 0] = True  # every example keeps at least one query
    q[0, -1] = False
    return q


def _hidden_entropy(rng):
    b, n, t, s = distinct(rng, 4, (2, 3, 5, 7, 11))
    return {
        "weights": _attention_maps(rng, b, n, t, s, masked=True, scale=float(rng.uniform(0.5, 4))),
        "query_mask": _query_mask(rng, b, t),
    }


on_entropy = calls("attention_entropy")
ENTROPY = exercise("08_entropy", "attention entropy per head", "entropy-collapse", checks=(
    on_entropy.check("weights (2, 3, 5, 7), every key visible", lambda rng: {"weights": _attention_maps(rng)}),
    on_entropy.check("masked keys (weights exactly 0)", lambda rng: {"weights": _attention_maps(rng, masked=True)}),
    on_entropy.check(
        "query_mask (2, 5): padded queries do not count",
        lambda rng: {"weights": _attention_maps(rng), "query_mask": _query_mask(rng, 2, 5)},
    ),
    on_entropy.hidden("random sizes, masked keys and queries", _hidden_entropy),
    on_entropy.hidden("sharp maps", lambda rng: {"weights": _attention_maps(rng, 3, 2, 7, 5, masked=True, scale=8.0)}),
), mutants=(
    patched(
        "log2",
        "used log base 2; attention entropy is in nats (natural log)",
        ("w * np.log(np.where", "w * np.log2(np.where"),
    ),
    patched(
        "no_zero_guard",
        "0 log 0 came out as NaN: masked keys have weight exactly 0 and contribute 0 (treat 0 log 0 as 0)",
        ("plogp = np.where(w > 0, w * np.log(np.where(w > 0, w, 1.0)), 0.0)", "plogp = w * np.log(w)"),
    ),
    patched(
        "query_mask_ignored",
        "averaged over every query row; rows where query_mask is False (padding) must not count",
        ("valid = np.ones((B, T), bool) if query_mask is None else", "valid = np.ones((B, T), bool) if True else"),
    ),
    patched(
        "no_minus_sign",
        "the entropy came out negative: Ent = -sum_j p_j log p_j",
        ("row_entropy = -plogp.sum(axis=-1)", "row_entropy = plogp.sum(axis=-1)"),
    ),
    patched(
        "summed_not_averaged",
        "summed the row entropies; average them over the batch and the (valid) queries",
        ("(row_entropy * valid).sum(axis=(0, 2)) / valid.sum(axis=(0, 2))", "(row_entropy * valid).sum(axis=(0, 2))"),
    ),
    patched(
        "per_example",
        "returned (B, N); average over the batch too: one number per head, shape (N,)",
        (
            "(row_entropy * valid).sum(axis=(0, 2)) / valid.sum(axis=(0, 2))",
            "(row_entropy * valid).sum(axis=2) / valid.sum(axis=2)",
        ),
    ),
))


# ----------------------------------------------------------------------------- 9. sink rate
def _sink_maps(rng, shape=(2, 3, 5, 7), k=0, eps=0.3):
    """Causal maps (L, B, N, T, T) with planted sinks on key k.

    Each map's sink score alpha_k is set (by bisection on a logit bias) to a target
    drawn away from eps; a few targets fall between eps and eps * T / (T - k), where
    the classic mistake of dividing by T instead of T - k gives the other verdict.
    """
    L, Bn, Nn, Tn = shape
    mask = causal(Tn)[0, 0]
    lo, hi = eps, eps * Tn / (Tn - k)  # empty when k = 0
    margin = min(0.03, (hi - lo) / 3) if k else 0.03
    maps = np.empty((L, Bn, Nn, Tn, Tn))
    for n, idx in enumerate(np.ndindex(L, Bn, Nn)):
        if k and n % 4 == 0:
            target = rng.uniform(lo + margin, hi - margin)  # tells T - k from T
        else:
            target = rng.uniform(0.02, 0.98)
            while abs(target - eps) < margin or lo - margin < target < hi + margin:
                target = rng.uniform(0.02, 0.98)
        logits = rng.standard_normal((Tn, Tn))

        def planted(bias):  # the map with `bias` added to column k, and its alpha_k
            shifted = logits.copy()
            shifted[k:, k] += bias
            a = softmax_rows(shifted, mask)
            return a, a[k:, k].sum() / (Tn - k)

        low, high = -30.0, 30.0
        for _ in range(50):  # alpha_k grows with the bias
            mid = (low + high) / 2
            low, high = (mid, high) if planted(mid)[1] < target else (low, mid)
        maps[idx] = planted((low + high) / 2)[0]
    return maps.astype(np.float32)


def _hidden_sinks(rng):
    k = int(rng.choice([0, 1, 3]))
    eps = float(rng.choice([0.25, 0.35]))
    return {"maps": _sink_maps(rng, (3, 2, 5, 11), k=k, eps=eps), "eps": eps, "k": k}


on_sink_rate = calls("sink_rate", atol=1e-3)
SINKS = exercise("09_sinks", "Gu et al.'s attention sink rate", "attention-sinks", checks=(
    on_sink_rate.check(
        "maps (L=2, B=3, N=5, T=7), key 0, eps=0.3",
        lambda rng: {"maps": _sink_maps(rng), "eps": 0.3, "k": 0},
    ),
    on_sink_rate.check("key k=1, T=11", lambda rng: {"maps": _sink_maps(rng, (2, 3, 5, 11), k=1), "eps": 0.3, "k": 1}),
    on_sink_rate.check("key k=2, eps=0.2", lambda rng: {"maps": _sink_maps(rng, k=2, eps=0.2), "eps": 0.2, "k": 2}),
    on_sink_rate.hidden("random k and eps", _hidden_sinks),
    on_sink_rate.hidden("key 2", lambda rng: {"maps": _sink_maps(rng, (1, 5, 3, 7), k=2), "eps": 0.3, "k": 2}),
), mutants=(
    patched(
        "divides_by_T",
        "wrong normaliser: Gu et al. average column k over the T - k queries that can see key k (i >= k), not "
        "over all T queries",
        ("received = a[..., k:, k].sum(axis=-1) / (T - k)", "received = a[..., k:, k].sum(axis=-1) / T"),
    ),
    patched(
        "fraction",
        "returned a fraction; the sink rate is a percentage (x 100)",
        ("return 100.0 * np.mean(received > eps)", "return np.mean(received > eps)"),
    ),
    patched(
        "row_not_column",
        "summed row k (what token k attends to); the sink score is column k, the attention token k receives from "
        "the queries i >= k",
        ("received = a[..., k:, k].sum(axis=-1) / (T - k)", "received = a[..., k, k:].sum(axis=-1) / (T - k)"),
    ),
    patched(
        "heads_averaged_first",
        "averaged over heads before thresholding; the indicator 1[alpha > eps] is taken per (sample, layer, head) "
        "and then averaged",
        ("return 100.0 * np.mean(received > eps)", "return 100.0 * np.mean(received.mean(axis=-1) > eps)"),
    ),
    patched(
        "ignores_k",
        "always measured key 0: the sink score is for key k",
        ("received = a[..., k:, k].sum(axis=-1) / (T - k)", "received = a[..., :, 0].sum(axis=-1) / T"),
    ),
))


# ----------------------------------------------------------------------------- 10. softmax1
def _hidden_softmax1(rng):
    shape = tuple(distinct(rng, 3, (3, 5, 7, 11)))
    x = normal(rng, *shape, scale=float(rng.uniform(1, 10))) + float(rng.uniform(-5, 5))
    return {"x": x.astype(np.float32), "mask": key_mask(rng, shape, empty_rows=2)}


on_softmax1 = calls("softmax1")
SOFTMAX1 = exercise("10_softmax1", "softmax1: attention that may attend to nothing", "attention-sinks", checks=(
    on_softmax1.check(
        "x (3, 5, 7), no mask",
        lambda rng: {"x": (normal(rng, 3, 5, 7, scale=2.0) + 1.0).astype(np.float32)},
    ),
    on_softmax1.check(
        "large logits (around 1000)",
        lambda rng: {"x": (1000.0 + normal(rng, 5, 7, scale=20.0)).astype(np.float32)},
    ),
    on_softmax1.check(
        "very negative logits: rows sum to almost 0",
        lambda rng: {"x": (normal(rng, 5, 7) - 8.0).astype(np.float32)},
        atol=1e-7,
    ),
    on_softmax1.check(
        "mask with fully masked rows",
        lambda rng: {"x": normal(rng, 3, 5, 7, scale=2.0), "mask": key_mask(rng, (3, 5, 7), empty_rows=2)},
    ),
    on_softmax1.hidden("random shape, shift and mask", _hidden_softmax1),
    on_softmax1.hidden(
        "very negative logits",
        lambda rng: {"x": (normal(rng, 7, 3) - float(rng.uniform(6, 12))).astype(np.float32)},
        atol=1e-7,
    ),
    on_softmax1.hidden(
        "large logits with a mask",
        lambda rng: {"x": normal(rng, 7, 11, scale=300.0), "mask": key_mask(rng, (7, 11), empty_rows=1)},
    ),
), mutants=(
    patched(
        "no_plus_one",
        "this is the ordinary softmax: softmax1 adds 1 to the denominator, exp(x_i) / (1 + sum_j exp(x_j)), as if "
        "there were an extra key with logit 0",
        (
            "return e / (np.exp(-m) + np.sum(e, axis=-1, keepdims=True))",
            "total = np.sum(e, axis=-1, keepdims=True)\n    return e / np.where(total > 0, total, 1.0)",
        ),
    ),
    patched(
        "one_after_shift",
        "after shifting the logits by m, the 1 in the denominator becomes exp(-m): exp(x_i - m) / (exp(-m) + "
        "sum_j exp(x_j - m))",
        ("np.exp(-m) + np.sum(e", "1.0 + np.sum(e"),
    ),
    patched(
        "no_shift",
        "not numerically stable: exp() overflowed for large logits; shift by m = max(0, max_j x_j) first (and the "
        "1 becomes exp(-m))",
        ("m = np.maximum(m, 0.0)  # the extra logit 0 takes part in the max", "m = 0.0 * np.maximum(m, 0.0)"),
    ),
    patched(
        "mask_ignored",
        "the mask was ignored: masked entries must get weight exactly 0",
        ("mask = np.ones(x.shape, bool) if mask is None else", "mask = np.ones(x.shape, bool) if True else"),
    ),
))


# ----------------------------------------------------------------------------- 11. scalable softmax
def _hidden_ssmax(rng):
    b, t = distinct(rng, 2, (3, 5, 7, 11))
    lengths = rng.integers(0, t + 1, size=b)
    lengths[0] = t
    mask = causal(t)[0] & (np.arange(t)[None, None, :] < lengths[:, None, None])  # (b, t, t)
    return {"x": normal(rng, b, t, t, scale=2.0), "s": float(rng.uniform(0.3, 1.5)), "mask": mask}


on_ssmax = calls("scalable_softmax")
SSMAX = exercise("11_ssmax", "scalable softmax (SSMax) against attention fading", "dilution", checks=(
    on_ssmax.check("x (3, 5, 7), s=1, no mask (n = 7)", lambda rng: {"x": normal(rng, 3, 5, 7, scale=2.0)}),
    on_ssmax.check("s=0.43, x (5, 11)", lambda rng: {"x": normal(rng, 5, 11, scale=2.0), "s": 0.43}),
    on_ssmax.check(
        "causal mask: row i sees n = i + 1 keys",
        lambda rng: {"x": normal(rng, 3, 7, 7, scale=2.0), "s": 0.8, "mask": causal(7)[0]},
    ),
    on_ssmax.check(
        "padding mask with a fully masked row",
        lambda rng: {"x": normal(rng, 3, 5, 7, scale=2.0), "mask": key_mask(rng, (3, 5, 7), empty_rows=1)},
    ),
    on_ssmax.hidden("causal and padding masks, random s", _hidden_ssmax),
    on_ssmax.hidden("long rows", lambda rng: {"x": normal(rng, 3, 101, scale=1.0), "s": 0.6}),
), mutants=(
    patched(
        "n_is_length",
        "used the full length S as n; n is the number of keys the row may see (with a causal mask, i + 1)",
        ("n = mask.sum(axis=-1, keepdims=True)", "n = np.full(mask.shape[:-1] + (1,), mask.shape[-1])"),
    ),
    patched(
        "no_log",
        "multiplied the logits by s * n; SSMax multiplies them by s * log(n)",
        ("z = s * np.log(np.maximum(n, 1)) * x", "z = s * np.maximum(n, 1) * x"),
    ),
    patched(
        "ignores_s",
        "the scale s was ignored: the logits are multiplied by s * log(n)",
        ("z = s * np.log(np.maximum(n, 1)) * x", "z = np.log(np.maximum(n, 1)) * x"),
    ),
    patched(
        "log2",
        "used log2(n); SSMax uses the natural log: n^(s z) = exp(s log(n) z)",
        ("z = s * np.log(np.maximum(n, 1)) * x", "z = s * np.log2(np.maximum(n, 1)) * x"),
    ),
    patched(
        "mask_ignored",
        "the mask was ignored: masked keys get weight 0 and do not count in n",
        ("mask = np.ones(x.shape, bool) if mask is None else", "mask = np.ones(x.shape, bool) if True else"),
    ),
))
