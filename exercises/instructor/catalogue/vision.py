"""Exercises 12-15 (lessons detr-queries, vit-attention, spurious-attention)."""

from __future__ import annotations

import numpy as np

from ._gen import distinct, normal, softmax_rows
from tinytf.grading.core import Check, Exercise, Mutant
from tinytf.grading.judges import optimal_cost


# ----------------------------------------------------------------------------- 12. GIoU
def _boxes(rng, n, lo=0.0, hi=1.0, min_size=0.05, max_size=0.5):
    """n random valid (x0, y0, x1, y1) boxes inside [lo, hi]^2."""
    size = rng.uniform(min_size, max_size, size=(n, 2))
    corner = lo + rng.uniform(0, 1, size=(n, 2)) * (hi - lo - size)
    return np.concatenate([corner, corner + size], axis=1).astype(np.float32)


def _cxcywh(rng, *shape):
    centre = rng.uniform(0.2, 0.8, size=shape + (2,))
    size = rng.uniform(0.05, 0.4, size=shape + (2,))
    return np.concatenate([centre, size], axis=-1).astype(np.float32)


def _nested(rng):
    outer = _boxes(rng, 3, min_size=0.4, max_size=0.6)
    inner = np.concatenate([outer[:, :2] + 0.05, outer[:, 2:] - 0.1], axis=1)
    return {"boxes1": outer, "boxes2": np.concatenate([inner, _boxes(rng, 2)]).astype(np.float32)}


GIOU = Exercise(
    number=12,
    slug="giou",
    title="box format and generalised IoU (GIoU)",
    lesson="detr-queries",
    functions=("box_cxcywh_to_xyxy", "generalized_box_iou"),
    checks=(
        Check(
            name="box_cxcywh_to_xyxy on (5, 4)",
            function="box_cxcywh_to_xyxy",
            inputs=lambda rng: {"boxes": _cxcywh(rng, 5)},
        ),
        Check(
            name="generalized_box_iou: 3 boxes against 5",
            function="generalized_box_iou",
            inputs=lambda rng: {"boxes1": _boxes(rng, 3, max_size=0.7), "boxes2": _boxes(rng, 5, max_size=0.7)},
        ),
        Check(
            name="disjoint boxes: GIoU < 0",
            function="generalized_box_iou",
            inputs=lambda rng: {"boxes1": _boxes(rng, 3, 0.0, 0.4), "boxes2": _boxes(rng, 5, 0.6, 1.0)},
        ),
        Check(
            name="identical boxes: GIoU = 1 on the diagonal",
            function="generalized_box_iou",
            inputs=lambda rng: {"boxes1": (b := _boxes(rng, 5)), "boxes2": b.copy()},
        ),
        Check(name="nested boxes", function="generalized_box_iou", inputs=_nested),
        Check(
            name="hidden: 7 boxes against 11",
            function="generalized_box_iou",
            hidden=True,
            inputs=lambda rng: {"boxes1": _boxes(rng, 7, max_size=0.8), "boxes2": _boxes(rng, 11, max_size=0.8)},
        ),
        Check(
            name="hidden: disjoint boxes",
            function="generalized_box_iou",
            hidden=True,
            inputs=lambda rng: {"boxes1": _boxes(rng, 5, 0.55, 1.0), "boxes2": _boxes(rng, 3, 0.0, 0.45)},
        ),
        Check(name="hidden: nested boxes", function="generalized_box_iou", hidden=True, inputs=_nested),
        Check(
            name="hidden: box_cxcywh_to_xyxy on (2, 5, 4)",
            function="box_cxcywh_to_xyxy",
            hidden=True,
            inputs=lambda rng: {"boxes": _cxcywh(rng, 2, 5)},
        ),
    ),
    mutants=(
        Mutant(
            id="no_enclosing_term",
            mistake="this is plain IoU: GIoU subtracts the enclosing-box term (|C| - |A u B|) / |C|, with C the "
            "smallest box containing both",
            patch=(("return inter / union - (hull - union) / hull", "return inter / union"),),
        ),
        Mutant(
            id="enclosing_term_sign",
            mistake="the enclosing-box term has the wrong sign: GIoU = IoU - (|C| - |A u B|) / |C|",
            patch=(("return inter / union - (hull - union) / hull", "return inter / union + (hull - union) / hull"),),
        ),
        Mutant(
            id="overlap_not_clamped",
            mistake="negative overlaps were not clamped to 0: for boxes that do not overlap, the intersection "
            "width/height is negative and must become 0 (two negatives multiply to a positive area)",
            patch=(
                (
                    "iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)",
                    "iw = np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0])",
                ),
                (
                    "ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)",
                    "ih = np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1])",
                ),
            ),
        ),
        Mutant(
            id="union_double_counts",
            mistake="the union counts the overlap twice: |A u B| = |A| + |B| - |A n B|",
            patch=(("union = area_a + area_b - inter", "union = area_a + area_b"),),
        ),
        Mutant(
            id="full_width",
            mistake="x0 = cx - w/2: the centre is half a width (and half a height) from each side",
            patch=(("[cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]", "[cx - w, cy - h, cx + w, cy + h]"),),
        ),
        Mutant(
            id="xyxy_order",
            mistake="the corners come out in the wrong order: return (x0, y0, x1, y1)",
            patch=(
                (
                    "[cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]",
                    "[cx - w / 2, cx + w / 2, cy - h / 2, cy + h / 2]",
                ),
            ),
        ),
    ),
)


# ----------------------------------------------------------------------------- 13. matching
def _greedy_fails(rng, q, g):
    """A cost matrix on which matching each target greedily to its cheapest free query is not optimal."""
    for _ in range(1000):
        cost = rng.uniform(0, 1, size=(q, g))
        used, total = set(), 0.0
        for j in range(g):
            i = min((i for i in range(q) if i not in used), key=lambda i: cost[i, j])
            used.add(i)
            total += cost[i, j]
        if total > optimal_cost(cost) + 1e-3:
            return {"cost": cost.astype(np.float32)}
    raise RuntimeError("no cost matrix where greedy matching fails")  # pragma: no cover


def _matching(name, shape_fn, hidden=False):
    return Check(
        name=name,
        function="hungarian_match",
        hidden=hidden,
        inputs=shape_fn,
        judge="matching",
        outputs=("query_index", "target_index"),
    )


MATCHING = Exercise(
    number=13,
    slug="matching",
    title="optimal one-to-one matching (Hungarian) for DETR",
    lesson="detr-queries",
    functions=("hungarian_match",),
    checks=(
        _matching("square cost (3, 3)", lambda rng: {"cost": rng.uniform(0, 1, (3, 3)).astype(np.float32)}),
        _matching(
            "more queries than targets (5, 3)", lambda rng: {"cost": rng.uniform(-1, 1, (5, 3)).astype(np.float32)}
        ),
        _matching("a cost where the greedy choice is wrong (7, 5)", lambda rng: _greedy_fails(rng, 7, 5)),
        _matching(
            "fewer queries than targets (3, 5)", lambda rng: {"cost": rng.uniform(0, 1, (3, 5)).astype(np.float32)}
        ),
        _matching("hidden: (7, 4)", lambda rng: {"cost": rng.uniform(-2, 2, (7, 4)).astype(np.float32)}, hidden=True),
        _matching("hidden: (6, 6), greedy fails", lambda rng: _greedy_fails(rng, 6, 6), hidden=True),
        _matching(
            "hidden: fewer queries than targets (4, 7)",
            lambda rng: {"cost": rng.uniform(0, 1, (4, 7)).astype(np.float32)},
            hidden=True,
        ),
    ),
    mutants=(
        Mutant(
            id="maximises",
            mistake="the matching maximises the total cost; DETR's matching minimises it (the cost is low for "
            "a good query-target pair)",
            patch=(
                ("best, best_rows = np.inf, None", "best, best_rows = -np.inf, None"),
                ("if total < best:", "if total > best:"),
            ),
        ),
        Mutant(
            id="greedy",
            mistake="a greedy choice (each target takes its cheapest free query) is not optimal in general: "
            "minimise the total cost over all one-to-one matchings",
            append="""
def hungarian_match(cost):
    c = np.asarray(cost, np.float64)
    Q, G = c.shape
    used, rows, cols = set(), [], []
    for j in range(G):
        free = [i for i in range(Q) if i not in used]
        if not free:
            break
        i = min(free, key=lambda i: c[i, j])
        used.add(i)
        rows.append(i)
        cols.append(j)
    return np.asarray(rows), np.asarray(cols)
""",
        ),
        Mutant(
            id="not_one_to_one",
            mistake="two targets got the same query: a matching is one-to-one (each query matches at most one target)",
            append="""
def hungarian_match(cost):
    c = np.asarray(cost, np.float64)
    n = min(c.shape)
    return c.argmin(axis=0)[:n], np.arange(c.shape[1])[:n]
""",
        ),
        Mutant(
            id="swapped_outputs",
            mistake="the outputs are swapped: return (query_index, target_index), the row indices first",
            append="""
_reference_match = hungarian_match


def hungarian_match(cost):
    rows, cols = _reference_match(cost)
    return cols, rows
""",
        ),
    ),
)


# ----------------------------------------------------------------------------- 14. patches
def _images(rng, b=2, rows=5, cols=7, p=3, c=4):
    return normal(rng, b, rows * p, cols * p, c)


def _hidden_patches(rng):
    b, rows, cols, c = distinct(rng, 4, (1, 2, 3, 5, 7))
    p = int(rng.choice([2, 4]))
    return {"images": _images(rng, b, rows, cols, p, c), "patch_size": p}


def _hidden_one_channel(rng):
    b, rows, cols = distinct(rng, 3, (1, 2, 3, 5))
    p = int(rng.choice([3, 5]))
    return {"images": _images(rng, b, rows, cols, p, 1), "patch_size": p}


def _embed(rng, b=2, rows=5, cols=7, p=3, c=4, d=11):
    return {
        "images": _images(rng, b, rows, cols, p, c),
        "weight": normal(rng, p * p * c, d, scale=0.2),
        "bias": normal(rng, d),
        "patch_size": p,
    }


PATCHES = Exercise(
    number=14,
    slug="patches",
    title="ViT patch embedding",
    lesson="vit-attention",
    functions=("patchify", "patch_embed"),
    checks=(
        Check(
            name="patchify: images (2, 15, 21, 4), patch_size=3 -> (2, 35, 36)",
            function="patchify",
            inputs=lambda rng: {"images": _images(rng), "patch_size": 3},
        ),
        Check(
            name="patchify: one channel, patch_size=5",
            function="patchify",
            inputs=lambda rng: {"images": _images(rng, 3, 2, 3, 5, 1), "patch_size": 5},
        ),
        Check(
            name="patchify raises ValueError when the image size is not a multiple of patch_size",
            function="patchify",
            raises="ValueError",
            inputs=lambda rng: {"images": normal(rng, 2, 16, 21, 4), "patch_size": 3},
        ),
        Check(name="patch_embed: weight (36, 11), bias (11,)", function="patch_embed", inputs=lambda rng: _embed(rng)),
        Check(name="hidden: patchify, random sizes", function="patchify", hidden=True, inputs=_hidden_patches),
        Check(
            name="hidden: patchify, one channel",
            function="patchify",
            hidden=True,
            inputs=_hidden_one_channel,
        ),
        Check(
            name="hidden: patch_embed, random sizes",
            function="patch_embed",
            hidden=True,
            inputs=lambda rng: _embed(rng, 3, 3, 2, 2, 5, 7),
        ),
    ),
    mutants=(
        Mutant(
            id="column_major",
            mistake="patches are ordered column by column; ViT reads them row by row (row-major): patch "
            "index = row * cols + col",
            patch=(("x.transpose(0, 1, 3, 2, 4, 5)", "x.transpose(0, 3, 1, 2, 4, 5)"),),
        ),
        Mutant(
            id="channels_first",
            mistake="each patch was flattened as (C, p, p), channels first; flatten it as (p, p, C), the "
            "image's own (row, column, channel) order",
            patch=(("x.transpose(0, 1, 3, 2, 4, 5)", "x.transpose(0, 1, 3, 5, 2, 4)"),),
        ),
        Mutant(
            id="no_transpose",
            mistake="reshaped into patches without moving the axes: each 'patch' is then a strip of pixel "
            "rows, not a p x p square; reshape to (B, rows, p, cols, p, C) and transpose to "
            "(B, rows, cols, p, p, C) before flattening",
            patch=(("    x = x.transpose(0, 1, 3, 2, 4, 5)  # (B, rows, cols, p, p, C)\n", ""),),
        ),
        Mutant(
            id="pixels_transposed",
            mistake="inside a patch the pixels are read column by column; flatten each patch row by row, "
            "as (p_row, p_col, C)",
            patch=(("x.transpose(0, 1, 3, 2, 4, 5)", "x.transpose(0, 1, 3, 4, 2, 5)"),),
        ),
        Mutant(
            id="no_bias",
            mistake="the bias is missing: patch_embed = patches @ weight + bias",
            patch=((" + np.asarray(bias, np.float64)  # (B, P, D)", "  # (B, P, D)"),),
        ),
    ),
)


# ----------------------------------------------------------------------------- 15. rollout
def _maps(rng, L=3, b=2, n=5, t=7, leak=False, scale=2.0):
    """(L, B, N, T, T) attention maps; with leak=True rows sum to less than 1 (softmax1-like)."""
    logits = rng.standard_normal((L, b, n, t, t)) * scale
    if leak:
        logits = np.concatenate([logits, np.zeros((L, b, n, t, 1))], axis=-1)  # an extra zero-value key
        return softmax_rows(logits)[..., :t].astype(np.float32)
    return softmax_rows(logits).astype(np.float32)


ROLLOUT = Exercise(
    number=15,
    slug="rollout",
    title="attention rollout",
    lesson="spurious-attention",
    functions=("attention_rollout",),
    checks=(
        Check(
            name="maps (L=3, B=2, N=5, T=7), residual=0.5",
            function="attention_rollout",
            inputs=lambda rng: {"maps": _maps(rng)},
        ),
        Check(
            name="residual=0.2", function="attention_rollout", inputs=lambda rng: {"maps": _maps(rng), "residual": 0.2}
        ),
        Check(
            name="maps whose rows sum to less than 1 (softmax1-style)",
            function="attention_rollout",
            inputs=lambda rng: {"maps": _maps(rng, leak=True)},
        ),
        Check(
            name="hidden: four layers, random sizes",
            function="attention_rollout",
            hidden=True,
            inputs=lambda rng: {
                "maps": _maps(rng, 4, *distinct(rng, 3, (2, 3, 5, 11)), leak=True),
                "residual": float(rng.uniform(0.1, 0.9)),
            },
        ),
        Check(
            name="hidden: residual=0 (plain product)",
            function="attention_rollout",
            hidden=True,
            inputs=lambda rng: {"maps": _maps(rng, 2, 3, 2, 5), "residual": 0.0},
        ),
    ),
    mutants=(
        Mutant(
            id="no_identity",
            mistake="no residual identity: rollout adds I for the skip connection, A' = residual * I + "
            "(1 - residual) * mean_h A",
            patch=(
                (
                    "mixed = residual * np.eye(T) + (1 - residual) * a[layer].mean(axis=1)",
                    "mixed = a[layer].mean(axis=1)",
                ),
            ),
        ),
        Mutant(
            id="no_renormalisation",
            mistake="rows not renormalised: after adding the identity divide each row of A' by its sum (it "
            "is not 1 when the maps' rows are not)",
            patch=(("        mixed = mixed / mixed.sum(axis=-1, keepdims=True)  # rows sum to one again\n", ""),),
        ),
        Mutant(
            id="wrong_order",
            mistake="multiplied in the wrong order: R = A'_L ... A'_1, each new layer on the left (R <- A'_l R)",
            patch=(("rollout = mixed @ rollout", "rollout = rollout @ mixed"),),
        ),
        Mutant(
            id="max_over_heads",
            mistake="took the max over heads; rollout averages the heads",
            patch=(("a[layer].mean(axis=1)", "a[layer].max(axis=1)"),),
        ),
        Mutant(
            id="residual_weight_swapped",
            mistake="the weights are swapped: `residual` multiplies the identity, A' = residual * I + "
            "(1 - residual) * mean_h A",
            patch=(
                (
                    "mixed = residual * np.eye(T) + (1 - residual) * a[layer].mean(axis=1)",
                    "mixed = (1 - residual) * np.eye(T) + residual * a[layer].mean(axis=1)",
                ),
            ),
        ),
    ),
)
