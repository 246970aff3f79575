"""Exercises 1-3 (lesson attention-basics): softmax, attention, masks.

Each exercise lists its checks (visible ones first, then hidden ones) and its
mutants: the reference with one classic mistake patched in. Sizes are odd and
distinct (B=2, T=5, S=7, N=3, H=11) so a transposed axis cannot pass.
"""

from __future__ import annotations

import numpy as np

from ._gen import causal, distinct, key_mask, normal
from tinytf.grading.core import Check, Exercise, Mutant

# ----------------------------------------------------------------------------- 1. softmax
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


SOFTMAX = Exercise(
    number=1,
    slug="softmax",
    title="stable, masked softmax",
    lesson="attention-basics",
    functions=("softmax",),
    checks=(
        Check(
            name="rows of a (3, 5, 7) array, no mask",
            function="softmax",
            inputs=lambda rng: {"x": normal(rng, 3, 5, 7, scale=2.0)},
        ),
        Check(name="large logits (around 1000)", function="softmax", inputs=_big_rows),
        Check(
            name="mask of shape (1, 5, 7) broadcast against x (3, 5, 7)",
            function="softmax",
            inputs=lambda rng: {"x": normal(rng, 3, 5, 7, scale=2.0), "mask": key_mask(rng, (1, 5, 7))},
        ),
        Check(
            name="fully masked rows give all zeros",
            function="softmax",
            inputs=lambda rng: {"x": normal(rng, 3, 5, 7, scale=2.0), "mask": key_mask(rng, (3, 5, 7), empty_rows=3)},
        ),
        Check(name="axis=1", function="softmax", inputs=lambda rng: {"x": normal(rng, 3, 5, 7, scale=2.0), "axis": 1}),
        Check(name="hidden: random shape and mask", function="softmax", hidden=True, inputs=_hidden_softmax),
        Check(name="hidden: axis=0 with a mask", function="softmax", hidden=True, inputs=_hidden_softmax_axis),
        Check(name="hidden: large logits, mask with fully masked rows", function="softmax", hidden=True,
              inputs=_hidden_softmax_large),
        Check(name="hidden: axis=1, no mask", function="softmax", hidden=True,
              inputs=lambda rng: {"x": normal(rng, *distinct(rng, 3, (3, 5, 7, 11)), scale=3.0), "axis": 1}),
    ),
    mutants=(
        Mutant(
            id="no_max_shift",
            mistake="not numerically stable: exp() overflowed for large logits; subtract the row max "
            "before exp (softmax(x) = softmax(x - max x))",
            patch=(("m = np.where(np.isfinite(m), m, 0.0)  # a fully masked row has no max", "m = 0.0 * m"),),
        ),
        Mutant(
            id="wrong_axis",
            mistake="normalised over the wrong axis: the entries along `axis` (the last one by default) must sum to 1",
            patch=(("    x = np.asarray(x, np.float64)\n", "    x = np.asarray(x, np.float64)\n    axis = 0\n"),),
        ),
        Mutant(
            id="ignores_axis",
            mistake="the `axis` argument was ignored: normalise along the axis asked for",
            patch=(("    x = np.asarray(x, np.float64)\n", "    x = np.asarray(x, np.float64)\n    axis = -1\n"),),
        ),
        Mutant(
            id="mask_ignored",
            mistake="the mask was ignored: entries where mask is False must get weight "
            "exactly 0, and the rest renormalised",
            patch=(("    x = np.asarray(x, np.float64)\n", "    x = np.asarray(x, np.float64)\n    mask = None\n"),),
        ),
        Mutant(
            id="mask_inverted",
            mistake="the mask is inverted: True means 'keep' (may attend), False means masked out",
            patch=(
                (
                    "np.broadcast_to(np.asarray(mask, bool), x.shape)",
                    "np.broadcast_to(~np.asarray(mask, bool), x.shape)",
                ),
            ),
        ),
        Mutant(
            id="fully_masked_uniform",
            mistake=_FULL_ROW_MISTAKE,
            append="""
def softmax(x, mask=None, axis=-1):
    x = np.asarray(x, np.float64)
    if mask is not None:
        x = np.where(mask, x, -1e9)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)
""",
        ),
        Mutant(
            id="fully_masked_nan",
            mistake=_FULL_ROW_MISTAKE,
            append="""
def softmax(x, mask=None, axis=-1):
    x = np.asarray(x, np.float64)
    if mask is not None:
        x = np.where(mask, x, -np.inf)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)
""",
        ),
        Mutant(
            id="mask_multiplies_logits",
            mistake="masked by multiplying the logits by the mask: a logit of 0 still gets weight exp(0); "
            "masked entries must get weight 0",
            append="""
def softmax(x, mask=None, axis=-1):
    x = np.asarray(x, np.float64)
    if mask is not None:
        x = x * mask
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)
""",
        ),
        Mutant(
            id="mask_after_normalising",
            mistake="the mask was applied after normalising: zeroing weights afterwards leaves rows that "
            "sum to less than 1; mask first, then normalise",
            append="""
def softmax(x, mask=None, axis=-1):
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    w = e / e.sum(axis=axis, keepdims=True)
    return w if mask is None else w * mask
""",
        ),
    ),
)

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


ATTENTION = Exercise(
    number=2,
    slug="attention",
    title="scaled dot-product attention with masks",
    lesson="attention-basics",
    functions=("scaled_dot_product_attention",),
    checks=(
        Check(
            name="no mask: B=2, T=5 queries, S=7 keys, N=3 heads, H=11",
            function="scaled_dot_product_attention",
            inputs=lambda rng: _qkv(rng, scale=1.5),
            outputs=("out", "weights"),
        ),
        Check(
            name="key padding mask (B, 1, 1, S), lengths [7, 4]",
            function="scaled_dot_product_attention",
            inputs=lambda rng: {**_qkv(rng), "mask": _padding([7, 4], S)},
            outputs=("out", "weights"),
        ),
        Check(
            name="causal mask (1, 1, T, S)",
            function="scaled_dot_product_attention",
            inputs=lambda rng: {**_qkv(rng), "mask": causal(T, S)},
            outputs=("out", "weights"),
        ),
        Check(
            name="a query whose keys are all masked gets zero weights and a zero output",
            function="scaled_dot_product_attention",
            inputs=_empty_row,
            outputs=("out", "weights"),
        ),
        Check(
            name="hidden: random sizes and mask",
            function="scaled_dot_product_attention",
            hidden=True,
            inputs=_hidden_attention,
            outputs=("out", "weights"),
        ),
        Check(
            name="hidden: causal mask, more keys than queries",
            function="scaled_dot_product_attention",
            hidden=True,
            inputs=_hidden_causal_attention,
            outputs=("out", "weights"),
        ),
        Check(
            name="hidden: sharp attention, no mask",
            function="scaled_dot_product_attention",
            hidden=True,
            inputs=lambda rng: _qkv(rng, 3, 7, 5, 2, 13, scale=3.0),
            outputs=("out", "weights"),
        ),
    ),
    mutants=(
        Mutant(
            id="no_scale",
            mistake="the logits were not scaled: divide q·k by sqrt(H), H the head dim",
            patch=((" / np.sqrt(H)", ""),),
        ),
        Mutant(
            id="scale_by_d",
            mistake="the logits were divided by H; the scale is 1/sqrt(H)",
            patch=((" / np.sqrt(H)", " / H"),),
        ),
        Mutant(
            id="softmax_over_queries",
            mistake="softmax over the wrong axis (the queries T): each row weights[b, n, t, :] over the keys "
            "must sum to 1",
            patch=(
                (
                    "    weights = _softmax(logits, np.asarray(mask, bool))  # (B, N, T, S)",
                    "    mask = np.broadcast_to(np.asarray(mask, bool), logits.shape)\n"
                    "    weights = np.swapaxes(\n"
                    "        _softmax(np.swapaxes(logits, -1, -2), np.swapaxes(mask, -1, -2)), -1, -2)",
                ),
            ),
        ),
        Mutant(
            id="mask_ignored",
            mistake="the mask was ignored: masked keys must get weight exactly 0",
            patch=(
                (
                    "    if mask is None:\n        mask = np.ones(logits.shape, bool)",
                    "    mask = np.ones(logits.shape, bool)",
                ),
            ),
        ),
        Mutant(
            id="mask_inverted",
            mistake="the mask is inverted: True means 'may attend', False means masked out",
            patch=(
                (
                    "    if mask is None:\n        mask = np.ones(logits.shape, bool)",
                    "    if mask is None:\n        mask = np.zeros(logits.shape, bool)\n"
                    "    mask = ~np.asarray(mask, bool)",
                ),
            ),
        ),
        Mutant(
            id="keys_as_values",
            mistake="the output mixes the keys: out = weights @ V, with the values",
            patch=(('np.einsum("bnts,bsnh->btnh", weights, v)', 'np.einsum("bnts,bsnh->btnh", weights, k)'),),
        ),
        Mutant(
            id="out_heads_first",
            mistake="out came back as (B, N, T, H); tinytf keeps the layout of the inputs: (B, T, N, H)",
            patch=(('np.einsum("bnts,bsnh->btnh", weights, v)', 'np.einsum("bnts,bsnh->bnth", weights, v)'),),
        ),
    ),
)


# ----------------------------------------------------------------------------- 3. masks
def _hidden_causal(rng):
    t, extra = distinct(rng, 2, (3, 5, 7, 11))
    return {"T": t, "S": t + extra}


def _hidden_padding(rng):
    b, s = distinct(rng, 2, (3, 5, 7, 11))
    lengths = rng.integers(0, s + 1, size=b)
    lengths[0], lengths[-1] = 0, s
    return {"lengths": lengths.astype(np.int64), "S": s}


MASKS = Exercise(
    number=3,
    slug="masks",
    title="causal and padding masks",
    lesson="attention-basics",
    functions=("causal_mask", "padding_mask"),
    checks=(
        Check(name="causal_mask(5)", function="causal_mask", inputs=lambda rng: {"T": 5}),
        Check(
            name="causal_mask(5, S=7): queries are the last 5 of 7 positions",
            function="causal_mask",
            inputs=lambda rng: {"T": 5, "S": 7},
        ),
        Check(
            name="padding_mask(lengths=[3, 7, 1], S=7)",
            function="padding_mask",
            inputs=lambda rng: {"lengths": np.array([3, 7, 1]), "S": 7},
        ),
        Check(
            name="padding_mask with lengths 0 and S",
            function="padding_mask",
            inputs=lambda rng: {"lengths": np.array([0, 5, 2]), "S": 5},
        ),
        Check(name="hidden: causal_mask, random T < S", function="causal_mask", hidden=True, inputs=_hidden_causal),
        Check(
            name="hidden: padding_mask, random lengths", function="padding_mask", hidden=True, inputs=_hidden_padding
        ),
        Check(
            name="hidden: causal_mask(T), S left out",
            function="causal_mask",
            hidden=True,
            inputs=lambda rng: {"T": int(rng.choice([6, 9, 13]))},
        ),
    ),
    mutants=(
        Mutant(
            id="causal_strict",
            mistake="the diagonal is masked: query i may attend to itself; causal masking hides only the "
            "future, keys j > i (use j <= i)",
            patch=(("(key_pos <= query_pos)", "(key_pos < query_pos)"),),
        ),
        Mutant(
            id="causal_transposed",
            mistake="the causal mask is transposed: it lets query i see the future keys j >= i; causal means "
            "j <= i (lower triangular)",
            patch=(("(key_pos <= query_pos)", "(key_pos >= query_pos)"),),
        ),
        Mutant(
            id="causal_top_left",
            mistake="with S > T the queries are the last T positions (decoding with a cache): query i sits at "
            "position i + S - T and may see keys j <= i + S - T",
            patch=((" + (S - T)  # (T, 1)", "  # (T, 1)"),),
        ),
        Mutant(
            id="causal_no_broadcast_axes",
            mistake="returned a (T, S) mask: add the two leading broadcast axes, (1, 1, T, S), so it "
            "broadcasts against weights (B, N, T, S)",
            patch=(("(key_pos <= query_pos)[None, None]", "(key_pos <= query_pos)"),),
        ),
        Mutant(
            id="causal_not_bool",
            mistake="the mask must be boolean (True = may attend), not 0/1 numbers: ~mask and "
            "np.where(mask, ...) misbehave on integers",
            patch=(("(key_pos <= query_pos)[None, None]", "(key_pos <= query_pos).astype(np.int64)[None, None]"),),
        ),
        Mutant(
            id="padding_inverted",
            mistake="the padding mask is inverted: True must mark the real tokens (keys that may be "
            "attended), False the padding",
            patch=(("np.arange(S)[None, :] < lengths[:, None]", "np.arange(S)[None, :] >= lengths[:, None]"),),
        ),
        Mutant(
            id="padding_off_by_one",
            mistake="off by one: key j is a real token iff j < length (positions start at 0)",
            patch=(("np.arange(S)[None, :] < lengths[:, None]", "np.arange(S)[None, :] <= lengths[:, None]"),),
        ),
        Mutant(
            id="padding_masks_queries",
            mistake="the padding mask has shape (B, 1, S, 1), which masks queries; a key padding mask is (B, 1, 1, S)",
            patch=(("valid[:, None, None, :]  # (B, 1, 1, S)", "valid[:, None, :, None]"),),
        ),
    ),
)
