"""Tests for tinytf.detection: boxes, IoU/GIoU, Hungarian matching, the DETR loss, COCO AP.

Oracles: plain-Python GIoU (Rezatofighi et al. 2019, Algorithm 1), brute force over all
permutations, scipy.optimize.linear_sum_assignment, a numpy/scipy re-implementation of the DETR
loss, hand-computed AP values, and pycocotools' COCOeval on random synthetic detections.
"""

import contextlib
import io
import itertools
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment as scipy_lsa

from tinytf import detection as det

# Jitted entry points: one compilation per input shape instead of one per primitive (eager mode),
# which keeps this file fast on a busy 2-core machine.
box_iou = jax.jit(det.box_iou)
giou = jax.jit(det.generalized_box_iou, static_argnames="pairwise")
match_targets = jax.jit(det.match_targets)
hungarian_match = jax.jit(det.hungarian_match)
detr_loss = jax.jit(det.detr_loss, static_argnames=("num_classes", "aux"))
postprocess = jax.jit(det.postprocess)
# ----------------------------------------------------------------------------------------------
# helpers


def random_xyxy(rng, shape, lo=0.0, hi=1.0, min_size=0.01):
    """Random valid corner boxes of the given leading shape."""
    xy = rng.uniform(lo, hi, shape + (2,))
    wh = rng.uniform(min_size, (hi - lo) / 2, shape + (2,))
    return np.concatenate([xy, xy + wh], axis=-1)


def iou_giou_reference(a, b):
    """Plain-Python IoU and GIoU of two corner boxes (Rezatofighi et al. 2019, Algorithm 1)."""
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[2] - b[0]) * (b[3] - b[1])
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = area_a + area_b - inter
    hull = (max(a[2], b[2]) - min(a[0], b[0])) * (max(a[3], b[3]) - min(a[1], b[1]))
    iou = inter / union
    return iou, iou - (hull - union) / hull


def cxcywh(xyxy):
    xyxy = np.asarray(xyxy)
    return np.concatenate([(xyxy[..., :2] + xyxy[..., 2:]) / 2, xyxy[..., 2:] - xyxy[..., :2]], -1)


def xyxy(cxcywh_boxes):
    b = np.asarray(cxcywh_boxes)
    return np.concatenate([b[..., :2] - b[..., 2:] / 2, b[..., :2] + b[..., 2:] / 2], -1)


def brute_force_cost(cost):
    """Minimum total cost over every one-to-one assignment of min(n, m) pairs."""
    n, m = cost.shape
    if n >= m:  # give each column a distinct row
        return min(sum(cost[r, c] for c, r in enumerate(rows))
                   for rows in itertools.permutations(range(n), m))
    return min(sum(cost[r, c] for r, c in enumerate(cols))
               for cols in itertools.permutations(range(m), n))


# ----------------------------------------------------------------------------------------------
# 1. box formats


def test_box_conversions_round_trip_and_known_values(strict_rank):
    boxes = np.array([[0.5, 0.25, 0.2, 0.1], [0.1, 0.9, 0.0, 0.4]], np.float32)
    corners = det.box_cxcywh_to_xyxy(boxes)
    np.testing.assert_allclose(corners, [[0.4, 0.2, 0.6, 0.3], [0.1, 0.7, 0.1, 1.1]], atol=1e-6)
    np.testing.assert_allclose(det.box_xyxy_to_cxcywh(corners), boxes, atol=1e-6)
    rng = np.random.default_rng(0)
    many = random_xyxy(rng, (3, 5)).astype(np.float32)
    np.testing.assert_allclose(det.box_cxcywh_to_xyxy(det.box_xyxy_to_cxcywh(many)), many, atol=1e-6)


def test_normalize_and_denormalize_use_height_width_order(strict_rank):
    boxes = jnp.array([[[0.25, 0.5, 0.75, 1.0]]])  # (1, 1, 4) xyxy fractions
    pixels = det.denormalize_boxes(boxes, (48, 64))  # height 48, width 64
    np.testing.assert_allclose(pixels, [[[16.0, 24.0, 48.0, 48.0]]])
    np.testing.assert_allclose(det.normalize_boxes(pixels, (48, 64)), boxes)
    per_image = det.denormalize_boxes(jnp.ones((2, 3, 4)), jnp.array([[10, 20], [30, 40]]))
    np.testing.assert_allclose(per_image[0, 2], [20, 10, 20, 10])
    np.testing.assert_allclose(per_image[1, 0], [40, 30, 40, 30])


def test_box_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"boxes has shape \(3, 5\): expected \(\.\.\., 4\)"):
        det.box_cxcywh_to_xyxy(np.zeros((3, 5)))
    with pytest.raises(ValueError, match=r"image_size has shape \(3,\)"):
        det.denormalize_boxes(np.zeros((2, 4)), (1, 2, 3))
    with pytest.raises(ValueError, match="image_size has 3 rows"):
        det.denormalize_boxes(np.zeros((2, 5, 4)), np.ones((3, 2)))
    with pytest.raises(ValueError, match=r"boxes1 has shape \(5, 4\) and boxes2 has shape \(2, 3, 4\)"):
        det.box_iou(np.zeros((5, 4)), np.zeros((2, 3, 4)))


def test_box_area_counts_inverted_boxes_as_empty():
    boxes = jnp.array([[0.0, 0.0, 2.0, 3.0], [1.0, 1.0, 1.0, 5.0], [2.0, 2.0, 1.0, 3.0]])
    np.testing.assert_allclose(det.box_area(boxes), [6.0, 0.0, 0.0])


# ----------------------------------------------------------------------------------------------
# 2. IoU and GIoU


def test_iou_and_giou_match_plain_python_formula(strict_rank):
    rng = np.random.default_rng(1)
    a = random_xyxy(rng, (3, 5))  # (B=3, P=5, 4)
    b = random_xyxy(rng, (3, 7))  # (B=3, M=7, 4)
    iou = np.asarray(box_iou(a.astype(np.float32), b.astype(np.float32)))
    gen = np.asarray(giou(a.astype(np.float32), b.astype(np.float32)))
    assert iou.shape == gen.shape == (3, 5, 7)
    ref = np.array([[[iou_giou_reference(a[n, p], b[n, m]) for m in range(7)] for p in range(5)]
                    for n in range(3)])  # (3, 5, 7, 2)
    np.testing.assert_allclose(iou, ref[..., 0], atol=2e-6)
    np.testing.assert_allclose(gen, ref[..., 1], atol=2e-6)
    assert np.any(ref[..., 0] == 0) and np.any(ref[..., 0] > 0)  # both regimes exercised


def test_giou_properties():
    rng = np.random.default_rng(2)
    a, b = random_xyxy(rng, (200,)), random_xyxy(rng, (200,))
    g_ab = giou(a, b, pairwise=False)
    g_ba = giou(b, a, pairwise=False)
    iou = np.diagonal(box_iou(a, b))
    np.testing.assert_allclose(g_ab, g_ba, atol=1e-7)  # symmetric
    assert np.all(g_ab >= -1) and np.all(g_ab <= iou + 1e-7)  # -1 <= GIoU <= IoU <= 1
    np.testing.assert_allclose(giou(a, a, pairwise=False), 1.0, atol=1e-6)
    # nested boxes: the enclosing box is the outer box = the union, so GIoU = IoU = inner / outer
    outer = np.array([[0.1, 0.2, 0.9, 0.7]])
    inner = np.array([[0.3, 0.3, 0.5, 0.6]])
    expected = (0.2 * 0.3) / (0.8 * 0.5)
    np.testing.assert_allclose(giou(outer, inner), [[expected]], rtol=1e-5)
    np.testing.assert_allclose(box_iou(inner, outer), [[expected]], rtol=1e-5)
    # small boxes ever further apart: GIoU decreases towards -1
    far = [float(giou(np.array([[0.0, 0.0, 0.1, 0.1]]),
                                         np.array([[d, d, d + 0.1, d + 0.1]]))[0, 0])
           for d in (0.2, 2.0, 20.0, 200.0)]
    assert np.all(np.diff(far) < 0) and -1.0 <= far[-1] < -0.999


def test_pairwise_false_is_the_diagonal_of_pairwise():
    rng = np.random.default_rng(3)
    a, b = random_xyxy(rng, (2, 5)), random_xyxy(rng, (2, 5))
    full = giou(a, b)  # (2, 5, 5)
    np.testing.assert_allclose(giou(a, b, pairwise=False),
                               np.diagonal(full, axis1=1, axis2=2), atol=1e-7)


def test_degenerate_boxes_give_finite_values_and_gradients():
    # points, lines, coincident points, a box containing a point, inverted boxes
    a = jnp.array([[0.5, 0.5, 0.5, 0.5], [0.0, 0.0, 0.0, 1.0], [0.2, 0.2, 0.2, 0.2],
                   [0.0, 0.0, 1.0, 1.0], [0.3, 0.3, 0.1, 0.1]])
    b = jnp.array([[0.5, 0.5, 0.5, 0.5], [2.0, 0.0, 2.0, 1.0], [0.7, 0.7, 0.7, 0.7],
                   [0.4, 0.4, 0.4, 0.4], [0.0, 0.0, 0.2, 0.2]])
    iou = box_iou(a, b)
    gen = giou(a, b, pairwise=False)
    assert np.all(np.isfinite(iou)) and np.all(np.isfinite(gen))
    np.testing.assert_allclose(np.diagonal(iou), [0.0, 0.0, 0.0, 0.0, 0.0])
    assert float(gen[1]) == pytest.approx(-1.0)  # two parallel lines: hull 2, union 0
    assert float(gen[2]) == pytest.approx(-1.0)  # two distinct points: hull 0.25, union 0

    def total(x, y):  # IoU and GIoU on xyxy, and GIoU on the same numbers read as cxcywh
        as_centres = det.generalized_box_iou(det.box_cxcywh_to_xyxy(x), det.box_cxcywh_to_xyxy(y))
        return det.box_iou(x, y).sum() + det.generalized_box_iou(x, y).sum() + as_centres.sum()

    grads = jax.jit(jax.grad(total, argnums=(0, 1)))(a, b)
    assert all(np.all(np.isfinite(g)) for g in grads)


def test_low_precision_inputs_are_computed_in_float32():
    rng = np.random.default_rng(4)
    a, b = random_xyxy(rng, (5,)), random_xyxy(rng, (7,))
    low = giou(jnp.asarray(a, jnp.bfloat16), jnp.asarray(b, jnp.bfloat16))
    assert low.dtype == jnp.float32
    np.testing.assert_allclose(low, giou(a, b), atol=0.03)


# ----------------------------------------------------------------------------------------------
# 3. matching


# one compilation per shape; each test solves a small batch of matrices
batched_assignment = jax.jit(jax.vmap(det.linear_sum_assignment))


@pytest.mark.parametrize("shape", [(5, 3), (3, 5), (6, 4), (5, 5)])
def test_linear_sum_assignment_matches_brute_force(shape):
    rng = np.random.default_rng(shape[0] * 10 + shape[1])
    costs = np.concatenate([rng.normal(size=(2,) + shape),
                            rng.integers(0, 4, (2,) + shape)]).astype(np.float32)  # ties too
    all_rows, all_cols = batched_assignment(costs)
    for cost, rows, cols in zip(costs, np.asarray(all_rows), np.asarray(all_cols)):
        k = min(shape)
        assert rows.shape == cols.shape == (k,)
        assert len(set(rows)) == k and len(set(cols)) == k and np.all(np.diff(rows) > 0)
        np.testing.assert_allclose(cost[rows, cols].sum(), brute_force_cost(cost), atol=1e-5)


@pytest.mark.parametrize("shape", [(23, 11), (11, 23)])
def test_linear_sum_assignment_matches_scipy(shape):
    costs = np.random.default_rng(sum(shape)).normal(size=(3,) + shape).astype(np.float32)
    all_rows, all_cols = batched_assignment(costs)
    for cost, rows, cols in zip(costs, all_rows, all_cols):
        ref_rows, ref_cols = scipy_lsa(cost)
        np.testing.assert_array_equal(rows, ref_rows)  # continuous costs: the optimum is unique
        np.testing.assert_array_equal(cols, ref_cols)
    rows, cols = det.linear_sum_assignment(costs[0][:4, :3])  # and unbatched, without jit
    np.testing.assert_array_equal(np.stack([rows, cols]), np.stack(scipy_lsa(costs[0][:4, :3])))


def test_linear_sum_assignment_rejects_non_matrix():
    with pytest.raises(ValueError, match=r"cost has shape \(2, 3, 4\): expected a 2-D"):
        det.linear_sum_assignment(np.zeros((2, 3, 4)))


@pytest.mark.parametrize("Q,M", [(7, 5), (3, 7)])
def test_match_targets_agrees_with_scipy_on_valid_columns(Q, M, strict_rank):
    rng = np.random.default_rng(Q * M)
    B = 4
    cost = rng.uniform(1.0, 3.0, (B, Q, M)).astype(np.float32)  # positive: padding at 0 would win
    valid = rng.random((B, M)) < 0.6
    valid[0] = True
    valid[1] = False  # an image without objects
    cost[~np.broadcast_to(valid[:, None, :], cost.shape)] = -100.0  # padding looks attractive
    cost[2, 0, np.argmax(valid[2])] = np.inf  # forbidden pairs, as scipy allows
    pred_index, matched = match_targets(cost, valid)
    pred_index, matched = np.asarray(pred_index), np.asarray(matched)
    assert not np.any(matched & ~valid)  # padding is never matched
    for b in range(B):
        cols = np.nonzero(valid[b])[0]
        if len(cols) == 0:
            continue
        ref_rows, ref_cols = scipy_lsa(cost[b][:, cols])
        assert matched[b].sum() == min(Q, len(cols))
        np.testing.assert_array_equal(pred_index[b, cols[ref_cols]], ref_rows)
        np.testing.assert_array_equal(matched[b, cols[ref_cols]], True)
        used = pred_index[b][matched[b]]
        assert len(set(used)) == len(used)  # one target per query


def test_match_targets_handles_empty_and_bad_inputs():
    index, matched = det.match_targets(np.zeros((2, 5, 0)))
    assert index.shape == matched.shape == (2, 0)
    with pytest.raises(ValueError, match=r"cost has shape \(5, 3\): expected \(B, Q, M\)"):
        det.match_targets(np.zeros((5, 3)))
    with pytest.raises(ValueError, match=r"valid has shape \(2, 4\): expected \(B, M\) = \(2, 3\)"):
        det.match_targets(np.zeros((2, 5, 3)), np.ones((2, 4), bool))


def numpy_matching_cost(logits, boxes, labels, tgt_boxes, w_class=1.0, w_l1=5.0, w_giou=2.0):
    """(Q, M) DETR matching cost for one image, with the plain-Python GIoU."""
    prob = np.exp(logits - logits.max(-1, keepdims=True))
    prob /= prob.sum(-1, keepdims=True)
    Q, M = len(boxes), len(tgt_boxes)
    cost = np.zeros((Q, M))
    for q in range(Q):
        for m in range(M):
            giou = iou_giou_reference(xyxy(boxes[q]), xyxy(tgt_boxes[m]))[1]
            cost[q, m] = (w_l1 * np.abs(boxes[q] - tgt_boxes[m]).sum()
                          - w_class * prob[q, labels[m]] - w_giou * giou)
    return cost


def random_set_problem(rng, B=3, Q=7, M=5, C=3):
    logits = rng.normal(size=(B, Q, C + 1)).astype(np.float32) * 2
    boxes = cxcywh(random_xyxy(rng, (B, Q), 0.0, 0.6, 0.05)).astype(np.float32)
    labels = rng.integers(0, C, (B, M)).astype(np.int32)
    tgt_boxes = cxcywh(random_xyxy(rng, (B, M), 0.0, 0.6, 0.05)).astype(np.float32)
    valid = np.ones((B, M), bool)
    valid[0, 3:] = False
    valid[-1, :] = False
    labels[~valid] = -1
    tgt_boxes[~valid] = 0.0  # padding boxes are degenerate
    return logits, boxes, labels, tgt_boxes, valid


def test_matching_cost_matches_numpy_reference(strict_rank):
    logits, boxes, labels, tgt_boxes, valid = random_set_problem(np.random.default_rng(5))
    cost = np.asarray(jax.jit(det.matching_cost)(logits, boxes, labels, tgt_boxes))
    assert cost.shape == (3, 7, 5)
    for b in range(2):
        cols = np.nonzero(valid[b])[0]
        ref = numpy_matching_cost(logits[b], boxes[b], labels[b, cols], tgt_boxes[b, cols])
        np.testing.assert_allclose(cost[b][:, cols], ref, atol=1e-5)


def test_hungarian_match_is_jittable_and_optimal(strict_rank):
    logits, boxes, labels, tgt_boxes, valid = random_set_problem(np.random.default_rng(6))
    pred_index, matched = hungarian_match(logits, boxes, labels, tgt_boxes, valid)
    np.testing.assert_array_equal(matched, valid)
    for b in range(3):
        cols = np.nonzero(valid[b])[0]
        if len(cols) == 0:
            continue
        ref = numpy_matching_cost(logits[b], boxes[b], labels[b, cols], tgt_boxes[b, cols])
        rows = np.asarray(pred_index)[b, cols]
        np.testing.assert_allclose(ref[rows, np.arange(len(cols))].sum(), brute_force_cost(ref),
                                   atol=1e-5)


def test_hungarian_match_errors():
    logits, boxes, labels, tgt_boxes, valid = random_set_problem(np.random.default_rng(7))
    with pytest.raises(ValueError, match=r"predicted boxes have shape \(3, 6, 4\)"):
        det.hungarian_match(logits, boxes[:, :6], labels, tgt_boxes)
    with pytest.raises(ValueError, match=r"target boxes have shape \(3, 5, 3\)"):
        det.hungarian_match(logits, boxes, labels, tgt_boxes[..., :3])
    with pytest.raises(TypeError, match="target labels have dtype float32"):
        det.hungarian_match(logits, boxes, labels.astype(np.float32), tgt_boxes)
    with pytest.raises(ValueError, match=r"target valid mask has shape \(5,\)"):
        det.hungarian_match(logits, boxes, labels, tgt_boxes, valid[0])


# ----------------------------------------------------------------------------------------------
# 4. the DETR loss


def numpy_detr_loss(logits, boxes, labels, tgt_boxes, valid, C, eos=0.1, wc=1.0, wl=5.0, wg=2.0):
    """DETR's loss for one decoder layer, in numpy with scipy matching."""
    B, Q, _ = logits.shape
    n_boxes = max(valid.sum(), 1)
    ce_num = ce_den = l1 = giou = 0.0
    for b in range(B):
        cols = np.nonzero(valid[b])[0]
        target_class = np.full(Q, C)
        if len(cols):
            cost = numpy_matching_cost(logits[b], boxes[b], labels[b, cols], tgt_boxes[b, cols],
                                       wc, wl, wg)
            for q, j in zip(*scipy_lsa(cost)):
                m = cols[j]
                target_class[q] = labels[b, m]
                l1 += np.abs(boxes[b, q] - tgt_boxes[b, m]).sum()
                giou += 1 - iou_giou_reference(xyxy(boxes[b, q]), xyxy(tgt_boxes[b, m]))[1]
        z = logits[b].astype(np.float64)
        logp = z - z.max(-1, keepdims=True)
        logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
        w = np.where(target_class == C, eos, 1.0)
        ce_num += (w * -logp[np.arange(Q), target_class]).sum()
        ce_den += w.sum()
    return wc * ce_num / ce_den + wl * l1 / n_boxes + wg * giou / n_boxes


def test_detr_loss_matches_numpy_reference_with_aux_layers(strict_rank):
    rng = np.random.default_rng(8)
    logits, boxes, labels, tgt_boxes, valid = random_set_problem(rng)
    aux_logits, aux_boxes = random_set_problem(rng)[:2]
    outputs = {"logits": logits, "boxes": boxes, "aux": [{"logits": aux_logits, "boxes": aux_boxes}]}
    targets = {"labels": labels, "boxes": tgt_boxes}  # valid defaults to labels >= 0
    loss, metrics = detr_loss(outputs, targets, num_classes=3)
    final = numpy_detr_loss(logits, boxes, labels, tgt_boxes, valid, 3)
    aux = numpy_detr_loss(aux_logits, aux_boxes, labels, tgt_boxes, valid, 3)
    np.testing.assert_allclose(float(loss), final + aux, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["loss_aux"]), aux, rtol=1e-5)
    np.testing.assert_allclose(float(loss - metrics["loss_aux"]), final, rtol=1e-5)


def perfect_outputs(rng, labels, tgt_boxes, valid, Q, C, margin=30.0):
    """Outputs that put each valid target on a random distinct query, confidently."""
    B, M = labels.shape
    logits = np.zeros((B, Q, C + 1), np.float32)
    logits[:, :, C] = margin  # every query says "no object"...
    boxes = cxcywh(random_xyxy(rng, (B, Q), 0.0, 0.6, 0.05)).astype(np.float32)
    for b in range(B):
        queries = rng.permutation(Q)
        for m in np.nonzero(valid[b])[0]:  # ...except those holding an object
            q = queries[m]
            logits[b, q] = 0.0
            logits[b, q, labels[b, m]] = margin
            boxes[b, q] = tgt_boxes[b, m]
    return {"logits": logits, "boxes": boxes}


def test_detr_loss_is_zero_for_perfect_predictions_and_grows_with_errors():
    rng = np.random.default_rng(9)
    _, _, labels, tgt_boxes, valid = random_set_problem(rng, B=3, Q=7, M=5, C=3)
    perfect = perfect_outputs(rng, labels, tgt_boxes, valid, Q=7, C=3)
    targets = {"labels": labels, "boxes": tgt_boxes}  # valid defaults to labels >= 0

    def loss_fn(outputs):  # the same outputs as the final and the one auxiliary layer
        return detr_loss({**outputs, "aux": [outputs]}, targets, num_classes=3)

    loss, metrics = loss_fn(perfect)
    assert float(loss) < 1e-6
    assert float(metrics["class_accuracy"]) == 1.0 and float(metrics["cardinality_error"]) == 0.0
    # box noise: the loss rises with its scale
    noise = rng.normal(size=perfect["boxes"].shape).astype(np.float32)
    box_losses = [float(loss_fn({**perfect, "boxes": perfect["boxes"] + s * noise})[0])
                  for s in (0.0, 0.01, 0.03, 0.1)]
    assert np.all(np.diff(box_losses) > 0), box_losses
    # class errors: smaller margins, then wrong classes
    class_losses = [float(loss_fn(perfect_outputs(np.random.default_rng(10), labels, tgt_boxes,
                                                  valid, Q=7, C=3, margin=m))[0])
                    for m in (30.0, 3.0, 1.0, 0.3)]
    assert np.all(np.diff(class_losses) > 0), class_losses
    wrong = perfect_outputs(np.random.default_rng(10), labels, np.asarray(tgt_boxes), valid, 7, 3)
    real, no_object = wrong["logits"][..., :3], wrong["logits"][..., 3:]
    wrong["logits"] = np.concatenate([np.roll(real, 1, axis=-1), no_object], -1)  # class c -> c+1
    wrong_loss, wrong_metrics = loss_fn(wrong)
    assert float(wrong_loss) > class_losses[-1] and float(wrong_metrics["class_accuracy"]) == 0.0


def test_detr_loss_gradients_are_finite_and_reach_only_matched_boxes():
    rng = np.random.default_rng(12)
    logits, boxes, labels, tgt_boxes, valid = random_set_problem(rng)
    boxes[0, 0, 2:] = 0.0  # a degenerate predicted box
    outputs = {"logits": logits, "boxes": boxes, "aux": [{"logits": logits, "boxes": boxes}]}
    targets = {"labels": labels, "boxes": tgt_boxes}  # valid defaults to labels >= 0
    grads = jax.jit(jax.grad(lambda o: det.detr_loss(o, targets, num_classes=3)[0]))(outputs)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
    pred_index, matched = hungarian_match(logits, boxes, labels, tgt_boxes, valid)
    has_target = np.zeros(boxes.shape[:2], bool)
    for b, m in zip(*np.nonzero(matched)):
        has_target[b, pred_index[b, m]] = True
    box_grad = np.abs(np.asarray(grads["boxes"])).sum(-1)
    assert np.all(box_grad[~has_target] == 0) and np.all(box_grad[has_target] > 0)
    assert np.all(np.abs(np.asarray(grads["logits"])).sum(-1) > 0)  # every query gets class signal


def test_detr_loss_with_no_targets_is_only_no_object_cross_entropy():
    logits, boxes, labels, tgt_boxes, valid = random_set_problem(np.random.default_rng(13))
    targets = {"labels": -np.ones_like(labels), "boxes": tgt_boxes}  # all padding
    outputs = {"logits": logits, "boxes": boxes, "aux": [{"logits": logits, "boxes": boxes}]}
    loss, metrics = detr_loss(outputs, targets, num_classes=3)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    np.testing.assert_allclose(float(loss), -2 * logp[..., 3].mean(), rtol=1e-5)  # two layers
    assert float(metrics["loss_l1"]) == 0.0 and float(metrics["loss_giou"]) == 0.0


def test_detr_loss_errors():
    logits, boxes, labels, tgt_boxes, valid = random_set_problem(np.random.default_rng(14))
    targets = {"labels": labels, "boxes": tgt_boxes}
    with pytest.raises(ValueError, match="logits have 4 classes but num_classes=4"):
        det.detr_loss({"logits": logits, "boxes": boxes}, targets, num_classes=4)
    bad_aux = {"logits": logits, "boxes": boxes, "aux": [{"logits": logits[:, :5], "boxes": boxes}]}
    with pytest.raises(ValueError, match=r"outputs\['aux'\]\[0\] has logits \(3, 5, 4\)"):
        det.detr_loss(bad_aux, targets, num_classes=3)


# ----------------------------------------------------------------------------------------------
# 5. post-processing


def test_postprocess_matches_detr_definition(strict_rank):
    rng = np.random.default_rng(15)
    logits = rng.normal(size=(2, 5, 4)).astype(np.float32)
    boxes = cxcywh(random_xyxy(rng, (2, 5), 0.0, 0.5)).astype(np.float32)
    out_boxes, scores, labels = postprocess({"logits": logits, "boxes": boxes}, (48, 64))
    prob = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    np.testing.assert_allclose(scores, prob[..., :3].max(-1), rtol=1e-5)
    np.testing.assert_array_equal(labels, prob[..., :3].argmax(-1))
    np.testing.assert_allclose(out_boxes, xyxy(boxes) * np.array([64, 48, 64, 48]), rtol=1e-5)


def test_postprocess_then_coco_ap_is_one_for_perfect_predictions():
    rng = np.random.default_rng(16)
    _, _, labels, tgt_boxes, valid = random_set_problem(rng, B=3, Q=7, M=5, C=3)
    outputs = perfect_outputs(rng, labels, tgt_boxes, valid, Q=7, C=3)
    boxes, scores, pred_labels = postprocess(outputs, (64, 64))
    keep = np.asarray(scores) > 0.5  # drop the "no object" queries
    gt = xyxy(tgt_boxes) * 64.0
    ap = det.coco_ap([np.asarray(b)[k] for b, k in zip(boxes, keep)],
                     [np.asarray(s)[k] for s, k in zip(scores, keep)],
                     [np.asarray(p)[k] for p, k in zip(pred_labels, keep)],
                     [np.asarray(g)[v] for g, v in zip(gt, valid)],
                     [lb[v] for lb, v in zip(labels, valid)])
    assert {k: ap[k] for k in ("AP", "AP50", "AP75", "AR100")} == pytest.approx(
        {"AP": 1.0, "AP50": 1.0, "AP75": 1.0, "AR100": 1.0})


# ----------------------------------------------------------------------------------------------
# 6. COCO AP


def box(x1, y1, x2, y2):
    return [float(x1), float(y1), float(x2), float(y2)]


def test_coco_ap_is_one_for_perfect_predictions_and_batched_arrays_work():
    rng = np.random.default_rng(17)
    gt = [random_xyxy(rng, (n,), 0, 50, 2) for n in (3, 5, 1)]
    labels = [rng.integers(0, 3, len(g)) for g in gt]
    scores = [rng.random(len(g)) for g in gt]
    perfect = det.coco_ap(gt, scores, labels, gt, labels)
    reached = {k: v for k, v in perfect.items() if v != -1.0 and k != "AR1"}  # AR1: one detection per image
    assert reached == pytest.approx({k: 1.0 for k in reached})  # every AP and AR with ground truth in range
    assert perfect["AR1"] < 1.0  # images with several objects of a class cannot reach recall 1 with one detection
    stacked = np.stack([gt[1], gt[1]])  # (B=2, D=5, 4) arrays instead of lists
    ap = det.coco_ap(stacked, np.ones((2, 5)), np.zeros((2, 5), int), stacked, np.zeros((2, 5), int))
    assert ap["AP"] == pytest.approx(1.0)


def test_coco_ap_hand_computed_precision_recall_curve():
    # one class, two GT; detections by score: hit, miss (far away), hit
    gt = [np.array([box(0, 0, 10, 10), box(20, 20, 30, 30)])]
    preds = [np.array([box(0, 0, 10, 10), box(50, 50, 60, 60), box(20, 20, 30, 30)])]
    ap = det.coco_ap(preds, [np.array([0.9, 0.8, 0.7])], [np.array([0, 0, 0])], gt, [np.array([0, 0])])
    # precision envelope 1 up to recall 0.5 (51 recall points), then 2/3 (50 points)
    expected = (51 * 1.0 + 50 * 2 / 3) / 101
    assert ap["AP"] == pytest.approx(expected) and ap["AP50"] == pytest.approx(expected)


def test_coco_ap_hand_computed_iou_threshold_dependence():
    # IoU = 72 / 100 = 0.72: a hit at 0.50, 0.55, ..., 0.70 and a miss at 0.75, ..., 0.95
    ap = det.coco_ap([np.array([box(0, 0, 10, 7.2)])], [np.array([0.5])], [np.array([1])],
                     [np.array([box(0, 0, 10, 10)])], [np.array([1])])
    assert {k: ap[k] for k in ("AP", "AP50", "AP75", "AR1")} == pytest.approx(
        {"AP": 0.5, "AP50": 1.0, "AP75": 0.0, "AR1": 0.5})
    only_50 = det.coco_ap([np.array([box(0, 0, 10, 7.2)])], [np.array([0.5])], [np.array([1])],
                          [np.array([box(0, 0, 10, 10)])], [np.array([1])], iou_thresholds=[0.5])
    assert only_50["AP"] == pytest.approx(1.0)


def test_coco_ap_hand_computed_missed_classes_extra_classes_and_max_dets():
    gt = [np.array([box(0, 0, 10, 10), box(20, 20, 30, 30)]), np.array([box(5, 5, 9, 9)])]
    gt_labels = [np.array([0, 0]), np.array([1])]
    # class 0 found once out of twice, class 1 missed, class 7 has no GT (excluded)
    preds = [np.array([box(0, 0, 10, 10), box(40, 40, 50, 50)]), np.zeros((0, 4))]
    ap = det.coco_ap(preds, [np.array([0.9, 0.3]), np.zeros(0)], [np.array([0, 7]), np.zeros(0, int)],
                     gt, gt_labels)
    assert ap["AP"] == pytest.approx((51 / 101 + 0.0) / 2)
    # max_dets counts per image and category: with 1, the lower-scored hit is dropped
    both = [np.array([box(0, 0, 10, 10), box(20, 20, 30, 30)]), np.array([box(5, 5, 9, 9)])]
    scores = [np.array([0.9, 0.8]), np.array([0.7])]
    assert det.coco_ap(both, scores, gt_labels, gt, gt_labels)["AP"] == pytest.approx(1.0)
    assert det.coco_ap(both, scores, gt_labels, gt, gt_labels, max_dets=1)["AP"] == pytest.approx(
        (51 / 101 + 1.0) / 2)


def test_coco_ap_matching_is_greedy_by_score_not_optimal():
    # A (high score) overlaps both GT, best with g1; B overlaps only g1. Greedy gives A -> g1 and
    # leaves B unmatched, although A -> g2, B -> g1 would match both at IoU 0.5.
    gt = [np.array([box(0, 0, 10, 10), box(10, 0, 20, 10)])]
    preds = [np.array([box(2, 0, 12, 10), box(0, 0, 10, 10)])]
    ap = det.coco_ap(preds, [np.array([0.9, 0.8])], [np.array([0, 0])], gt, [np.array([0, 0])],
                     iou_thresholds=[0.5])
    # A vs g1: IoU 80 / 120 = 2/3 -> TP; B: g1 taken, IoU with g2 = 0 -> FP. Recall 0.5.
    assert ap["AP"] == pytest.approx(51 / 101)


def test_coco_ap_no_predictions_and_no_ground_truth():
    gt = [np.array([box(0, 0, 10, 10)]), np.zeros((0, 4))]
    empty = [np.zeros((0, 4)), np.zeros((0, 4))]
    nothing = [np.zeros(0), np.zeros(0)]
    no_labels = [np.zeros(0, int), np.zeros(0, int)]
    none = det.coco_ap(empty, nothing, no_labels, gt, [np.array([2]), np.zeros(0, int)])
    assert {k: none[k] for k in ("AP", "AP50", "AP75", "AR1", "AR100", "AP_small")} == {
        "AP": 0.0, "AP50": 0.0, "AP75": 0.0, "AR1": 0.0, "AR100": 0.0, "AP_small": 0.0}
    assert none["AP_medium"] == none["AP_large"] == -1.0  # a 10 x 10 box is small: no medium or large GT
    preds = [np.array([box(0, 0, 10, 10)]), np.zeros((0, 4))]
    no_gt = det.coco_ap(preds, [np.array([0.9]), np.zeros(0)], [np.array([2]), np.zeros(0, int)],
                        empty, no_labels)
    assert set(no_gt.values()) == {-1.0}
    assert det.coco_ap([], [], [], [], [])["AP"] == -1.0


def test_coco_ap_input_errors():
    one = [np.array([box(0, 0, 1, 1)])]
    lab, score = [np.array([0])], [np.array([0.5])]
    with pytest.raises(ValueError, match="pred_scores has 2 images but pred_boxes has 1"):
        det.coco_ap(one, score * 2, lab, one, lab)
    with pytest.raises(ValueError, match=r"gt_boxes\[0\] has shape \(1, 3\)"):
        det.coco_ap(one, score, lab, [np.zeros((1, 3))], lab)
    with pytest.raises(ValueError, match=r"pred_boxes\[0\] has a box with x2 < x1.*\(x, y, w, h\)"):
        det.coco_ap([np.array([box(5, 5, 2, 8)])], score, lab, one, lab)
    with pytest.raises(TypeError, match=r"gt_labels\[0\] has dtype float64"):
        det.coco_ap(one, score, lab, one, [np.array([0.0])])
    with pytest.raises(ValueError, match=r"pred_scores\[0\] contains NaN"):
        det.coco_ap(one, [np.array([np.nan])], lab, one, lab)
    with pytest.raises(ValueError, match=r"pred_labels\[0\] has 2 entries but its boxes have 1"):
        det.coco_ap(one, score, [np.array([0, 1])], one, lab)
    with pytest.raises(ValueError, match="max_dets=0"):
        det.coco_ap(one, score, lab, one, lab, max_dets=0)


def pycocotools_ap(pred_boxes, pred_scores, pred_labels, gt_boxes, gt_labels, max_dets=100,
                   iou_thresholds=None):
    """AP, AP50, AP75 from pycocotools' COCOeval, with COCO objects built in memory."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, annotations, results = [], [], []
    categories = sorted(set(np.concatenate(gt_labels).tolist())
                        | set(np.concatenate(pred_labels).tolist()))
    for i in range(len(gt_boxes)):
        images.append({"id": i + 1, "width": 200, "height": 200})
        for (x1, y1, x2, y2), label in zip(np.asarray(gt_boxes[i], np.float64), gt_labels[i]):
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": int(label),
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                                "iscrowd": 0})
        for (x1, y1, x2, y2), score, label in zip(np.asarray(pred_boxes[i], np.float64),
                                                  pred_scores[i], pred_labels[i]):
            results.append({"image_id": i + 1, "category_id": int(label),
                            "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(score)})
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": images, "annotations": annotations,
                      "categories": [{"id": c, "name": str(c)} for c in categories]}
        gt.createIndex()
        evaluator = COCOeval(gt, gt.loadRes(results), "bbox")
        evaluator.params.maxDets = [max_dets]
        if iou_thresholds is not None:
            evaluator.params.iouThrs = np.asarray(iou_thresholds, float)
        evaluator.evaluate()
        evaluator.accumulate()
    precision = evaluator.eval["precision"][:, :, :, 0, 0]  # (T, R, K), area "all"

    def mean(s):
        return float(np.mean(s[s > -1])) if np.any(s > -1) else -1.0

    if iou_thresholds is not None:  # AP50 and AP75 only exist for the default thresholds
        return {"AP": mean(precision)}
    return {"AP": mean(precision), "AP50": mean(precision[0]), "AP75": mean(precision[5])}


def random_detections(rng, grid=False, tied_scores=False):
    """Several images and classes; noisy, missing, duplicated, mislabelled and extra detections.

    ``grid`` snaps corners to a 5-pixel grid, so that equal IoUs and IoUs exactly at a threshold
    occur; ``tied_scores`` rounds the scores to one decimal, so that score ties occur.
    """
    n_images, n_classes = int(rng.integers(1, 7)), int(rng.integers(1, 5))
    noise = rng.choice([0.5, 2.0, 5.0])

    def snap(b):
        return np.round(b / 5) * 5 if grid else b

    out = ([], [], [], [], [])
    for _ in range(n_images):
        gt = snap(random_xyxy(rng, (int(rng.integers(0, 8)),), 0, 120, 3))
        gt_lab = rng.integers(0, n_classes, len(gt))
        found = rng.random(len(gt)) < 0.8  # some objects are missed
        hits = gt[found] + rng.normal(0, noise, (found.sum(), 4))
        wrong = rng.random(len(hits)) < 0.15  # some get the wrong class
        hit_lab = np.where(wrong, rng.integers(0, n_classes, len(hits)), gt_lab[found])
        dup = rng.random(len(hits)) < 0.2  # some are detected twice
        extra = random_xyxy(rng, (int(rng.integers(0, 4)),), 0, 120, 3)  # false positives
        pred = snap(np.concatenate([hits, hits[dup] + rng.normal(0, 1, (dup.sum(), 4)), extra]))
        pred[:, 2:] = np.maximum(pred[:, 2:], pred[:, :2])  # corners ordered (zero width allowed)
        pred_lab = np.concatenate([hit_lab, hit_lab[dup], rng.integers(0, n_classes, len(extra))])
        scores = rng.random(len(pred))
        if tied_scores:
            scores = np.round(scores, 1)
        for lst, v in zip(out, (pred, scores, pred_lab, gt, gt_lab)):
            lst.append(v)
    return out


def test_coco_ap_equal_iou_ties_go_to_the_later_ground_truth():
    # A overlaps g1 and g2 equally (IoU 1/3); B is g1 exactly. pycocotools gives A the later GT.
    g1, g2 = box(0, 0, 10, 10), box(10, 0, 20, 10)
    preds = [np.array([box(5, 0, 15, 10), g1])]
    scores, labels = [np.array([0.9, 0.8])], [np.array([0, 0])]
    a_takes_g2 = det.coco_ap(preds, scores, labels, [np.array([g1, g2])], labels, iou_thresholds=[0.3])
    a_takes_g1 = det.coco_ap(preds, scores, labels, [np.array([g2, g1])], labels, iou_thresholds=[0.3])
    assert a_takes_g2["AP"] == pytest.approx(1.0)  # B then matches g1
    assert a_takes_g1["AP"] == pytest.approx(51 / 101)  # B finds g1 taken: a false positive
    for gt, ours in (([np.array([g1, g2])], a_takes_g2), ([np.array([g2, g1])], a_takes_g1)):
        ref = pycocotools_ap(preds, scores, labels, gt, labels, iou_thresholds=[0.3])
        assert ours["AP"] == pytest.approx(ref["AP"], abs=1e-6)


@pytest.mark.parametrize("seed", range(12))
def test_coco_ap_agrees_with_pycocotools(seed):
    rng = np.random.default_rng(100 + seed)
    case = random_detections(rng, grid=seed % 3 == 1, tied_scores=seed % 2 == 1)
    if sum(len(p) for p in case[0]) == 0:  # pycocotools cannot load an empty result list
        case[0][0], case[1][0], case[2][0] = np.array([box(1, 1, 5, 5)]), np.array([0.5]), np.array([0])
    max_dets = 3 if seed % 4 == 3 else 100
    ours = det.coco_ap(*case, max_dets=max_dets)
    ref = pycocotools_ap(*case, max_dets=max_dets)
    for key in ("AP", "AP50", "AP75"):
        assert ours[key] == pytest.approx(ref[key], abs=1e-6), (key, ours, ref)


STAT_NAMES = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large", "AR1", "AR10", "AR100", "AR_small",
              "AR_medium", "AR_large")


def pycocotools_summary(pred_boxes, pred_scores, pred_labels, gt_boxes, gt_labels, gt_crowd):
    """COCOeval.summarize()'s twelve numbers (defaults: maxDets 1/10/100, COCO area ranges), crowd GT included."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, annotations, results = [], [], []
    categories = sorted(set(np.concatenate(gt_labels).tolist()) | set(np.concatenate(pred_labels).tolist()))
    for i in range(len(gt_boxes)):
        images.append({"id": i + 1, "width": 400, "height": 400})
        for (x1, y1, x2, y2), label, crowd in zip(np.asarray(gt_boxes[i], np.float64), gt_labels[i], gt_crowd[i]):
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": int(label),
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                                "iscrowd": int(crowd)})
        for (x1, y1, x2, y2), score, label in zip(np.asarray(pred_boxes[i], np.float64), pred_scores[i],
                                                  pred_labels[i]):
            results.append({"image_id": i + 1, "category_id": int(label), "bbox": [x1, y1, x2 - x1, y2 - y1],
                            "score": float(score)})
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": images, "annotations": annotations,
                      "categories": [{"id": c, "name": str(c)} for c in categories]}
        gt.createIndex()
        evaluator = COCOeval(gt, gt.loadRes(results), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return dict(zip(STAT_NAMES, (float(x) for x in evaluator.stats)))


@pytest.mark.parametrize("seed", range(8))
def test_coco_summary_by_area_recall_and_crowd_agrees_with_pycocotools(seed):
    """All twelve numbers of COCOeval.summarize: AP by area, AR@1/10/100, AR by area, crowd GT ignored."""
    rng = np.random.default_rng(300 + seed)
    case = random_detections(rng, grid=seed % 2 == 1)
    scale = rng.choice([1.0, 2.0, 3.0])  # boxes of 3-180 px: small, medium and large areas occur
    case = ([b * scale for b in case[0]], case[1], case[2], [b * scale for b in case[3]], case[4])
    crowd = [rng.random(len(g)) < 0.2 for g in case[3]]
    if sum(len(p) for p in case[0]) == 0:
        case[0][0], case[1][0], case[2][0] = np.array([box(1, 1, 5, 5)]), np.array([0.5]), np.array([0])
    ours = det.coco_ap(*case, gt_crowd=crowd)
    ref = pycocotools_summary(*case, crowd)
    for key in STAT_NAMES:
        assert ours[key] == pytest.approx(ref[key], abs=1e-6), (key, ours, ref)


def test_crowd_region_absorbs_detections_instead_of_counting_them_false():
    crowd_box = box(0, 0, 100, 100)
    inside = [box(10, 10, 20, 20), box(50, 50, 60, 60)]  # overlap / own area = 1 with the crowd box
    preds = [np.array([box(200, 200, 210, 210)] + inside)]
    gt = [np.array([box(200, 200, 210, 210), crowd_box])]
    labels, scores = [np.array([0, 0, 0])], [np.array([0.5, 0.9, 0.8])]
    with_crowd = det.coco_ap(preds, scores, labels, gt, [np.array([0, 0])], gt_crowd=[np.array([False, True])])
    without = det.coco_ap(preds, scores, labels, gt, [np.array([0, 0])])
    assert with_crowd["AP"] == pytest.approx(1.0)  # both detections in the crowd are ignored
    assert without["AP"] < 0.5  # as regular GT the crowd box is missed and the two are false positives


def test_coco_ap_custom_thresholds_agree_with_pycocotools():
    case = random_detections(np.random.default_rng(200))
    thresholds = [0.3, 0.5, 0.6, 0.75, 0.8, 0.9]
    ours = det.coco_ap(*case, iou_thresholds=thresholds)
    ref = pycocotools_ap(*case, iou_thresholds=thresholds)
    assert ours["AP"] == pytest.approx(ref["AP"], abs=1e-6)


# ----------------------------------------------------------------------------------------------
# timing (a report, not an assertion on speed)


@pytest.mark.slow
def test_report_matcher_timing_against_scipy():
    """pytest tests/test_detection.py -m slow -s -k timing"""
    cost = np.random.default_rng(0).normal(size=(32, 100, 10)).astype(np.float32)
    index, _ = match_targets(cost)
    index.block_until_ready()
    jax_times, scipy_times = [], []
    for _ in range(30):
        start = time.perf_counter()
        match_targets(cost)[0].block_until_ready()
        jax_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        ref = [scipy_lsa(c) for c in cost]
        scipy_times.append(time.perf_counter() - start)
    for b, (rows, cols) in enumerate(ref):
        np.testing.assert_array_equal(np.asarray(index)[b, cols], rows)
    print(f"\n32 x (100 x 10) matching: jax (jit, vmap) {1e3 * np.median(jax_times):.2f} ms, "
          f"scipy loop {1e3 * np.median(scipy_times):.2f} ms (median of 30)")


def test_centre_recall_matches_a_python_loop():
    rng = np.random.default_rng(0)
    B, Q, M, C = 6, 5, 3, 3
    logits = rng.normal(size=(B, Q, C + 1)) * 3
    pred = rng.uniform(size=(B, Q, 4))
    labels = rng.integers(0, C, size=(B, M))
    boxes = rng.uniform(size=(B, M, 4))
    pred[:, :M, :2] = boxes[:, :, :2] + rng.uniform(-0.08, 0.08, size=(B, M, 2))  # some near misses, some hits
    valid = rng.uniform(size=(B, M)) < 0.8
    tol, min_score = 0.0625, 0.5
    prob = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    hits = total = 0
    for b in range(B):
        for m in range(M):
            if not valid[b, m]:
                continue
            total += 1
            hits += any(prob[b, q, :C].max() >= min_score and prob[b, q, :C].argmax() == labels[b, m]
                        and abs(pred[b, q, 0] - boxes[b, m, 0]) <= tol and abs(pred[b, q, 1] - boxes[b, m, 1]) <= tol
                        for q in range(Q))
    got = det.centre_recall({"logits": jnp.asarray(logits, jnp.float32), "boxes": jnp.asarray(pred, jnp.float32)},
                            labels, jnp.asarray(boxes, jnp.float32), valid, tolerance=tol, min_score=min_score)
    assert 0 < hits < total
    assert float(got) == pytest.approx(hits / total)
    with pytest.raises(ValueError, match="tolerance"):
        det.centre_recall({"logits": logits, "boxes": pred}, labels, boxes, valid, tolerance=0.0)
    with pytest.raises(ValueError, match=r"labels \(6, 3\), boxes \(6, 3, 2\)"):
        det.centre_recall({"logits": logits, "boxes": pred}, labels, boxes[..., :2], valid, tolerance=tol)
