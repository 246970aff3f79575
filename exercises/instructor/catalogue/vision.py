"""Exercises 12-15 (lessons detr-queries, vit-attention, spurious-attention)."""

from __future__ import annotations

import numpy as np

from ._build import calls, exercise, patched, rewritten
from ._gen import distinct, normal, softmax_rows
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


def _box_pair(n1, n2, range1=(0.0, 1.0), range2=(0.0, 1.0), max_size=0.5):
    """Inputs: n1 boxes inside range1^2 against n2 boxes inside range2^2."""
    return lambda rng: {
        "boxes1": _boxes(rng, n1, *range1, max_size=max_size),
        "boxes2": _boxes(rng, n2, *range2, max_size=max_size),
    }


def _nested(rng):
    outer = _boxes(rng, 3, min_size=0.4, max_size=0.6)
    inner = np.concatenate([outer[:, :2] + 0.05, outer[:, 2:] - 0.1], axis=1)
    return {"boxes1": outer, "boxes2": np.concatenate([inner, _boxes(rng, 2)]).astype(np.float32)}


on_giou = calls("generalized_box_iou")
on_cxcywh = calls("box_cxcywh_to_xyxy")
GIOU = exercise("12_giou", "box format and generalised IoU (GIoU)", "detr-queries", checks=(
    on_cxcywh.check("box_cxcywh_to_xyxy on (5, 4)", lambda rng: {"boxes": _cxcywh(rng, 5)}),
    on_giou.check("generalized_box_iou: 3 boxes against 5", _box_pair(3, 5, max_size=0.7)),
    on_giou.check("disjoint boxes: GIoU < 0", _box_pair(3, 5, (0.0, 0.4), (0.6, 1.0))),
    on_giou.check(
        "identical boxes: GIoU = 1 on the diagonal",
        lambda rng: {"boxes1": (b := _boxes(rng, 5)), "boxes2": b.copy()},
    ),
    on_giou.check("nested boxes", _nested),
    on_giou.hidden("7 boxes against 11", _box_pair(7, 11, max_size=0.8)),
    on_giou.hidden("disjoint boxes", _box_pair(5, 3, (0.55, 1.0), (0.0, 0.45))),
    on_giou.hidden("nested boxes", _nested),
    on_cxcywh.hidden("box_cxcywh_to_xyxy on (2, 5, 4)", lambda rng: {"boxes": _cxcywh(rng, 2, 5)}),
), mutants=(
    patched(
        "no_enclosing_term",
        "this is plain IoU: GIoU subtracts the enclosing-box term (|C| - |A u B|) / |C|, with C the smallest box "
        "containing both",
        ("return inter / union - (hull - union) / hull", "return inter / union"),
    ),
    patched(
        "enclosing_term_sign",
        "the enclosing-box term has the wrong sign: GIoU = IoU - (|C| - |A u B|) / |C|",
        ("return inter / union - (hull - union) / hull", "return inter / union + (hull - union) / hull"),
    ),
    patched(
        "overlap_not_clamped",
        "negative overlaps were not clamped to 0: for boxes that do not overlap, the intersection width/height is "
        "negative and must become 0 (two negatives multiply to a positive area)",
        (
            "iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)",
            "iw = np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0])",
        ),
        (
            "ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)",
            "ih = np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1])",
        ),
    ),
    patched(
        "union_double_counts",
        "the union counts the overlap twice: |A u B| = |A| + |B| - |A n B|",
        ("union = area_a + area_b - inter", "union = area_a + area_b"),
    ),
    patched(
        "full_width",
        "x0 = cx - w/2: the centre is half a width (and half a height) from each side",
        ("[cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]", "[cx - w, cy - h, cx + w, cy + h]"),
    ),
    patched(
        "xyxy_order",
        "the corners come out in the wrong order: return (x0, y0, x1, y1)",
        ("[cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]", "[cx - w / 2, cx + w / 2, cy - h / 2, cy + h / 2]"),
    ),
))


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


def _uniform_cost(q, g, lo=0.0, hi=1.0):
    """Inputs: a (q, g) cost drawn uniformly in [lo, hi)."""
    return lambda rng: {"cost": rng.uniform(lo, hi, (q, g)).astype(np.float32)}


on_match = calls("hungarian_match", judge="matching", outputs=("query_index", "target_index"))
MATCHING = exercise("13_matching", "optimal one-to-one matching (Hungarian) for DETR", "detr-queries", checks=(
    on_match.check("square cost (3, 3)", _uniform_cost(3, 3)),
    on_match.check("more queries than targets (5, 3)", _uniform_cost(5, 3, -1.0)),
    on_match.check("a cost where the greedy choice is wrong (7, 5)", lambda rng: _greedy_fails(rng, 7, 5)),
    on_match.check("fewer queries than targets (3, 5)", _uniform_cost(3, 5)),
    on_match.hidden("(7, 4)", _uniform_cost(7, 4, -2.0, 2.0)),
    on_match.hidden("(6, 6), greedy fails", lambda rng: _greedy_fails(rng, 6, 6)),
    on_match.hidden("fewer queries than targets (4, 7)", _uniform_cost(4, 7)),
), mutants=(
    patched(
        "maximises",
        "the matching maximises the total cost; DETR's matching minimises it (the cost is low for a good "
        "query-target pair)",
        ("best, best_rows = np.inf, None", "best, best_rows = -np.inf, None"),
        ("if total < best:", "if total > best:"),
    ),
    rewritten(
        "greedy",
        "a greedy choice (each target takes its cheapest free query) is not optimal in general: minimise the "
        "total cost over all one-to-one matchings",
        """
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
    rewritten(
        "not_one_to_one",
        "two targets got the same query: a matching is one-to-one (each query matches at most one target)",
        """
def hungarian_match(cost):
    c = np.asarray(cost, np.float64)
    n = min(c.shape)
    return c.argmin(axis=0)[:n], np.arange(c.shape[1])[:n]
""",
    ),
    rewritten(
        "swapped_outputs",
        "the outputs are swapped: return (query_index, target_index), the row indices first",
        """
_reference_match = hungarian_match


def hungarian_match(cost):
    rows, cols = _reference_match(cost)
    return cols, rows
""",
    ),
))


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


on_patch_embed = calls("patch_embed")
on_patchify = calls("patchify")
PATCHES = exercise("14_patches", "ViT patch embedding", "vit-attention", checks=(
    on_patchify.check(
        "patchify: images (2, 15, 21, 4), patch_size=3 -> (2, 35, 36)",
        lambda rng: {"images": _images(rng), "patch_size": 3},
    ),
    on_patchify.check(
        "patchify: one channel, patch_size=5",
        lambda rng: {"images": _images(rng, 3, 2, 3, 5, 1), "patch_size": 5},
    ),
    on_patchify.check(
        "patchify raises ValueError when the image size is not a multiple of patch_size",
        lambda rng: {"images": normal(rng, 2, 16, 21, 4), "patch_size": 3},
        raises="ValueError",
    ),
    on_patch_embed.check("patch_embed: weight (36, 11), bias (11,)", lambda rng: _embed(rng)),
    on_patchify.hidden("patchify, random sizes", _hidden_patches),
    on_patchify.hidden("patchify, one channel", _hidden_one_channel),
    on_patch_embed.hidden("patch_embed, random sizes", lambda rng: _embed(rng, 3, 3, 2, 2, 5, 7)),
), mutants=(
    patched(
        "column_major",
        "patches are ordered column by column; ViT reads them row by row (row-major): patch index = row * cols + "
        "col",
        ("x.transpose(0, 1, 3, 2, 4, 5)", "x.transpose(0, 3, 1, 2, 4, 5)"),
    ),
    patched(
        "channels_first",
        "each patch was flattened as (C, p, p), channels first; flatten it as (p, p, C), the image's own (row, "
        "column, channel) order",
        ("x.transpose(0, 1, 3, 2, 4, 5)", "x.transpose(0, 1, 3, 5, 2, 4)"),
    ),
    patched(
        "no_transpose",
        "reshaped into patches without moving the axes: each 'patch' is then a strip of pixel rows, not a p x p "
        "square; reshape to (B, rows, p, cols, p, C) and transpose to (B, rows, cols, p, p, C) before flattening",
        ("    x = x.transpose(0, 1, 3, 2, 4, 5)  # (B, rows, cols, p, p, C)\n", ""),
    ),
    patched(
        "pixels_transposed",
        "inside a patch the pixels are read column by column; flatten each patch row by row, as (p_row, p_col, C)",
        ("x.transpose(0, 1, 3, 2, 4, 5)", "x.transpose(0, 1, 3, 4, 2, 5)"),
    ),
    patched(
        "no_bias",
        "the bias is missing: patch_embed = patches @ weight + bias",
        (" + np.asarray(bias, np.float64)  # (B, P, D)", "  # (B, P, D)"),
    ),
))


# ----------------------------------------------------------------------------- 15. rollout
def _maps(rng, L=3, b=2, n=5, t=7, leak=False, scale=2.0):
    """(L, B, N, T, T) attention maps; with leak=True rows sum to less than 1 (softmax1-like)."""
    logits = rng.standard_normal((L, b, n, t, t)) * scale
    if leak:
        logits = np.concatenate([logits, np.zeros((L, b, n, t, 1))], axis=-1)  # an extra zero-value key
        return softmax_rows(logits)[..., :t].astype(np.float32)
    return softmax_rows(logits).astype(np.float32)


on_rollout = calls("attention_rollout")
ROLLOUT = exercise("15_rollout", "attention rollout", "spurious-attention", checks=(
    on_rollout.check("maps (L=3, B=2, N=5, T=7), residual=0.5", lambda rng: {"maps": _maps(rng)}),
    on_rollout.check("residual=0.2", lambda rng: {"maps": _maps(rng), "residual": 0.2}),
    on_rollout.check(
        "maps whose rows sum to less than 1 (softmax1-style)",
        lambda rng: {"maps": _maps(rng, leak=True)},
    ),
    on_rollout.hidden(
        "four layers, random sizes",
        lambda rng: {
            "maps": _maps(rng, 4, *distinct(rng, 3, (2, 3, 5, 11)), leak=True),
            "residual": float(rng.uniform(0.1, 0.9)),
        },
    ),
    on_rollout.hidden("residual=0 (plain product)", lambda rng: {"maps": _maps(rng, 2, 3, 2, 5), "residual": 0.0}),
), mutants=(
    patched(
        "no_identity",
        "no residual identity: rollout adds I for the skip connection, A' = residual * I + (1 - residual) * "
        "mean_h A",
        ("mixed = residual * np.eye(T) + (1 - residual) * a[layer].mean(axis=1)", "mixed = a[layer].mean(axis=1)"),
    ),
    patched(
        "no_renormalisation",
        "rows not renormalised: after adding the identity divide each row of A' by its sum (it is not 1 when the "
        "maps' rows are not)",
        ("        mixed = mixed / mixed.sum(axis=-1, keepdims=True)  # rows sum to one again\n", ""),
    ),
    patched(
        "wrong_order",
        "multiplied in the wrong order: R = A'_L ... A'_1, each new layer on the left (R <- A'_l R)",
        ("rollout = mixed @ rollout", "rollout = rollout @ mixed"),
    ),
    patched(
        "max_over_heads",
        "took the max over heads; rollout averages the heads",
        ("a[layer].mean(axis=1)", "a[layer].max(axis=1)"),
    ),
    patched(
        "residual_weight_swapped",
        "the weights are swapped: `residual` multiplies the identity, A' = residual * I + (1 - residual) * mean_h "
        "A",
        (
            "mixed = residual * np.eye(T) + (1 - residual) * a[layer].mean(axis=1)",
            "mixed = (1 - residual) * np.eye(T) + residual * a[layer].mean(axis=1)",
        ),
    ),
))
