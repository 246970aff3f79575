"""Exercises 1-3 (lesson attention-basics): softmax, attention, masks.

Each exercise lists its checks (visible ones first, then hidden ones) and its
mutants: the reference with one classic mistake patched in. Sizes are odd and
distinct (B=2, T=5, S=7, N=3, H=11) so a transposed axis cannot pass.
"""

from __future__ import annotations

import numpy as np

from ._build import NO_SCALE, calls, exercise, patched, rewritten
from ._gen import causal, distinct, key_mask, normal


# ----------------------------------------------------------------------------- 1. softmax
def _masked_then_softmax(masking: str) -> str:
    """A mutant's softmax: `x = masking` where a mask is given, then the textbook softmax."""
    return f"""
def softmax(x, mask=None, axis=-1):
    x = np.asarray(x, np.float64)
    if mask is not None:
        x = {masking}
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)
"""


_FULL_ROW_MISTAKE = (
    "a fully masked row must come back as all zeros; yours is uniform or NaN — filling masked "
    "logits with -inf (NaN: 0/0) or a huge negative number (uniform) needs a guard for rows "
    "with no valid entry"
)


def _big_rows(rng):
    return {"x": (1000.0 + normal(rng, 5, 7, scale=20.0)).astype(np.float32)}


def _hidden_softmax(rng):
    shape = tuple(distinct(rng, 3, (3, 5, 7, 11)))
    x = normal(rng, *shape, scale=float(rng.uniform(1, 30)))
    return {"x": x, "mask": key_mask(rng, shape, empty_rows=2)}


def _hidden_softmax_axis(rng):
    x = normal(rng, 7, 3, 5, scale=200.0)
    mask = np.swapaxes(key_mask(rng, (5, 3, 7), empty_rows=1), 0, 2)  # rows along axis 0
    return {"x": x, "mask": mask, "axis": 0}


def _hidden_softmax_large(rng):
    shape = tuple(distinct(rng, 2, (3, 5, 7, 11)))
    x = (float(rng.uniform(500, 3000)) + normal(rng, *shape, scale=30.0)).astype(np.float32)
    return {"x": x, "mask": key_mask(rng, shape, empty_rows=1)}


on_softmax = calls("softmax")
SOFTMAX = exercise("01_softmax", "stable, masked softmax", "attention-basics", checks=(
    on_softmax.check("rows of a (3, 5, 7) array, no mask", lambda rng: {"x": normal(rng, 3, 5, 7, scale=2.0)}),
    on_softmax.check("large logits (around 1000)", _big_rows),
    on_softmax.check(
        "mask of shape (1, 5, 7) broadcast against x (3, 5, 7)",
        lambda rng: {"x": normal(rng, 3, 5, 7, scale=2.0), "mask": key_mask(rng, (1, 5, 7))},
    ),
    on_softmax.check(
        "fully masked rows give all zeros",
        lambda rng: {"x": normal(rng, 3, 5, 7, scale=2.0), "mask": key_mask(rng, (3, 5, 7), empty_rows=3)},
    ),
    on_softmax.check("axis=1", lambda rng: {"x": normal(rng, 3, 5, 7, scale=2.0), "axis": 1}),
    on_softmax.hidden("random shape and mask", _hidden_softmax),
    on_softmax.hidden("axis=0 with a mask", _hidden_softmax_axis),
    on_softmax.hidden("large logits, mask with fully masked rows", _hidden_softmax_large),
    on_softmax.hidden(
        "axis=1, no mask",
        lambda rng: {"x": normal(rng, *distinct(rng, 3, (3, 5, 7, 11)), scale=3.0), "axis": 1},
    ),
), mutants=(
    patched(
        "no_max_shift",
        "not numerically stable: exp() overflowed for large logits; subtract the row max before exp (softmax(x) = "
        "softmax(x - max x))",
        ("m = np.where(np.isfinite(m), m, 0.0)  # a fully masked row has no max", "m = 0.0 * m"),
    ),
    patched(
        "wrong_axis",
        "normalised over the wrong axis: the entries along `axis` (the last one by default) must sum to 1",
        ("    x = np.asarray(x, np.float64)\n", "    x = np.asarray(x, np.float64)\n    axis = 0\n"),
    ),
    patched(
        "ignores_axis",
        "the `axis` argument was ignored: normalise along the axis asked for",
        ("    x = np.asarray(x, np.float64)\n", "    x = np.asarray(x, np.float64)\n    axis = -1\n"),
    ),
    patched(
        "mask_ignored",
        "the mask was ignored: entries where mask is False must get weight exactly 0, and the rest renormalised",
        ("    x = np.asarray(x, np.float64)\n", "    x = np.asarray(x, np.float64)\n    mask = None\n"),
    ),
    patched(
        "mask_inverted",
        "the mask is inverted: True means 'keep' (may attend), False means masked out",
        ("np.broadcast_to(np.asarray(mask, bool), x.shape)", "np.broadcast_to(~np.asarray(mask, bool), x.shape)"),
    ),
    rewritten("fully_masked_uniform", _FULL_ROW_MISTAKE, _masked_then_softmax("np.where(mask, x, -1e9)")),
    rewritten("fully_masked_nan", _FULL_ROW_MISTAKE, _masked_then_softmax("np.where(mask, x, -np.inf)")),
    rewritten(
        "mask_multiplies_logits",
        "masked by multiplying the logits by the mask: a logit of 0 still gets weight exp(0); masked entries must "
        "get weight 0",
        _masked_then_softmax("x * mask"),
    ),
    rewritten(
        "mask_after_normalising",
        "the mask was applied after normalising: zeroing weights afterwards leaves rows that sum to less than 1; "
        "mask first, then normalise",
        """
def softmax(x, mask=None, axis=-1):
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    w = e / e.sum(axis=axis, keepdims=True)
    return w if mask is None else w * mask
""",
    ),
))


# ----------------------------------------------------------------------------- 2. attention
B, T, S, N, H = 2, 5, 7, 3, 11


def _qkv(rng, b=B, t=T, s=S, n=N, h=H, scale=1.0):
    return {
        "query": normal(rng, b, t, n, h, scale=scale),
        "key": normal(rng, b, s, n, h, scale=scale),
        "value": normal(rng, b, s, n, h),
    }


def _padding(lengths, s):
    return (np.arange(s)[None, :] < np.asarray(lengths)[:, None])[:, None, None, :]


def _empty_row(rng):
    mask = key_mask(rng, (B, 1, T, S))
    mask[0, 0, 1] = False  # query 1 of example 0 may see nothing
    return {**_qkv(rng), "mask": mask}


def _hidden_attention(rng):
    b, t, s, n, h = distinct(rng, 5, (2, 3, 5, 7, 11, 13))
    mask = key_mask(rng, (b, n, t, s), empty_rows=1)
    return {**_qkv(rng, b, t, s, n, h), "mask": mask}


def _hidden_causal_attention(rng):
    t, extra = distinct(rng, 2, (3, 5, 7))
    return {**_qkv(rng, 2, t, t + extra, 3, 5, scale=2.0), "mask": causal(t, t + extra)}


on_sdpa = calls("scaled_dot_product_attention", outputs=("out", "weights"))
ATTENTION = exercise("02_attention", "scaled dot-product attention with masks", "attention-basics", checks=(
    on_sdpa.check("no mask: B=2, T=5 queries, S=7 keys, N=3 heads, H=11", lambda rng: _qkv(rng, scale=1.5)),
    on_sdpa.check(
        "key padding mask (B, 1, 1, S), lengths [7, 4]",
        lambda rng: {**_qkv(rng), "mask": _padding([7, 4], S)},
    ),
    on_sdpa.check("causal mask (1, 1, T, S)", lambda rng: {**_qkv(rng), "mask": causal(T, S)}),
    on_sdpa.check("a query whose keys are all masked gets zero weights and a zero output", _empty_row),
    on_sdpa.hidden("random sizes and mask", _hidden_attention),
    on_sdpa.hidden("causal mask, more keys than queries", _hidden_causal_attention),
    on_sdpa.hidden("sharp attention, no mask", lambda rng: _qkv(rng, 3, 7, 5, 2, 13, scale=3.0)),
), mutants=(
    patched("no_scale", NO_SCALE, (" / np.sqrt(H)", "")),
    patched("scale_by_d", "the logits were divided by H; the scale is 1/sqrt(H)", (" / np.sqrt(H)", " / H")),
    patched(
        "softmax_over_queries",
        "softmax over the wrong axis (the queries T): each row weights[b, n, t, :] over the keys must sum to 1",
        (
            "    weights = _softmax(logits, np.asarray(mask, bool))  # (B, N, T, S)",
            "    mask = np.broadcast_to(np.asarray(mask, bool), logits.shape)\n"
            "    weights = np.swapaxes(\n"
            "        _softmax(np.swapaxes(logits, -1, -2), np.swapaxes(mask, -1, -2)), -1, -2)",
        ),
    ),
    patched(
        "mask_ignored",
        "the mask was ignored: masked keys must get weight exactly 0",
        ("    if mask is None:\n        mask = np.ones(logits.shape, bool)", "    mask = np.ones(logits.shape, bool)"),
    ),
    patched(
        "mask_inverted",
        "the mask is inverted: True means 'may attend', False means masked out",
        (
            "    if mask is None:\n        mask = np.ones(logits.shape, bool)",
            "    if mask is None:\n        mask = np.zeros(logits.shape, bool)\n    mask = ~np.asarray(mask, bool)",
        ),
    ),
    patched(
        "keys_as_values",
        "the output mixes the keys: out = weights @ V, with the values",
        ("np.einsum(\"bnts,bsnh->btnh\", weights, v)", "np.einsum(\"bnts,bsnh->btnh\", weights, k)"),
    ),
    patched(
        "out_heads_first",
        "out came back as (B, N, T, H); tinytf keeps the layout of the inputs: (B, T, N, H)",
        ("np.einsum(\"bnts,bsnh->btnh\", weights, v)", "np.einsum(\"bnts,bsnh->bnth\", weights, v)"),
    ),
))


# ----------------------------------------------------------------------------- 3. masks
def _hidden_causal(rng):
    t, extra = distinct(rng, 2, (3, 5, 7, 11))
    return {"T": t, "S": t + extra}


def _hidden_padding(rng):
    b, s = distinct(rng, 2, (3, 5, 7, 11))
    lengths = rng.integers(0, s + 1, size=b)
    lengths[0], lengths[-1] = 0, s
    return {"lengths": lengths.astype(np.int64), "S": s}


on_padding_mask = calls("padding_mask")
on_causal_mask = calls("causal_mask")
MASKS = exercise("03_masks", "causal and padding masks", "attention-basics", checks=(
    on_causal_mask.check("causal_mask(5)", lambda rng: {"T": 5}),
    on_causal_mask.check("causal_mask(5, S=7): queries are the last 5 of 7 positions", lambda rng: {"T": 5, "S": 7}),
    on_padding_mask.check("padding_mask(lengths=[3, 7, 1], S=7)", lambda rng: {"lengths": np.array([3, 7, 1]), "S": 7}),
    on_padding_mask.check("padding_mask with lengths 0 and S", lambda rng: {"lengths": np.array([0, 5, 2]), "S": 5}),
    on_causal_mask.hidden("causal_mask, random T < S", _hidden_causal),
    on_padding_mask.hidden("padding_mask, random lengths", _hidden_padding),
    on_causal_mask.hidden("causal_mask(T), S left out", lambda rng: {"T": int(rng.choice([6, 9, 13]))}),
), mutants=(
    patched(
        "causal_strict",
        "the diagonal is masked: query i may attend to itself; causal masking hides only the future, keys j > i "
        "(use j <= i)",
        ("(key_pos <= query_pos)", "(key_pos < query_pos)"),
    ),
    patched(
        "causal_transposed",
        "the causal mask is transposed: it lets query i see the future keys j >= i; causal means j <= i (lower "
        "triangular)",
        ("(key_pos <= query_pos)", "(key_pos >= query_pos)"),
    ),
    patched(
        "causal_top_left",
        "with S > T the queries are the last T positions (decoding with a cache): query i sits at position i + S "
        "- T and may see keys j <= i + S - T",
        (" + (S - T)  # (T, 1)", "  # (T, 1)"),
    ),
    patched(
        "causal_no_broadcast_axes",
        "returned a (T, S) mask: add the two leading broadcast axes, (1, 1, T, S), so it broadcasts against "
        "weights (B, N, T, S)",
        ("(key_pos <= query_pos)[None, None]", "(key_pos <= query_pos)"),
    ),
    patched(
        "causal_not_bool",
        "the mask must be boolean (True = may attend), not 0/1 numbers: ~mask and np.where(mask, ...) misbehave "
        "on integers",
        ("(key_pos <= query_pos)[None, None]", "(key_pos <= query_pos).astype(np.int64)[None, None]"),
    ),
    patched(
        "padding_inverted",
        "the padding mask is inverted: True must mark the real tokens (keys that may be attended), False the "
        "padding",
        ("np.arange(S)[None, :] < lengths[:, None]", "np.arange(S)[None, :] >= lengths[:, None]"),
    ),
    patched(
        "padding_off_by_one",
        "off by one: key j is a real token iff j < length (positions start at 0)",
        ("np.arange(S)[None, :] < lengths[:, None]", "np.arange(S)[None, :] <= lengths[:, None]"),
    ),
    patched(
        "padding_masks_queries",
        "the padding mask has shape (B, 1, S, 1), which masks queries; a key padding mask is (B, 1, 1, S)",
        ("valid[:, None, None, :]  # (B, 1, 1, S)", "valid[:, None, :, None]"),
    ),
))
