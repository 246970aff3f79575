"""Set-based object detection for DETR: boxes, IoU/GIoU, Hungarian matching, the loss, and AP.

DETR (Carion et al., "End-to-End Object Detection with Transformers", ECCV 2020) predicts a
fixed set of Q (class, box) pairs per image. Training first finds the one-to-one assignment of
predictions to ground-truth objects with the lowest cost (the Hungarian algorithm, Kuhn 1955),
then pushes matched predictions towards their objects and every other prediction towards the
extra "no object" class. No anchors, no non-maximum suppression: duplicates cost loss.

Read top to bottom:
1. box formats: normalised (cx, cy, w, h) as the model predicts them, (x1, y1, x2, y2) in pixels;
2. IoU and generalised IoU (Rezatofighi et al., CVPR 2019), NaN-free for zero-area boxes;
3. matching: the cost matrix and a pure-JAX Hungarian solver (optax's, after Scenic) that runs
   under ``jax.vmap``/``jax.jit``, so the whole loss is one compiled function;
4. the DETR set loss: weighted cross-entropy + L1 + GIoU, with auxiliary decoder layers;
5. post-processing: model outputs to pixel boxes, scores and labels;
6. COCO average precision in numpy, following pycocotools' ``COCOeval`` step by step.

Conventions: the last class index ``C`` of the ``C + 1`` logits is "no object"; padded targets
carry label -1 and ``valid = False``; images are (height, width).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

# ----------------------------------------------------------------------------------------------
# 1. Box formats


def _check_boxes(name: str, boxes) -> jax.Array:
    boxes = jnp.asarray(boxes)
    if boxes.ndim < 1 or boxes.shape[-1] != 4:
        raise ValueError(f"{name} has shape {boxes.shape}: expected (..., 4) boxes")
    return boxes


def box_cxcywh_to_xyxy(boxes: jax.Array) -> jax.Array:
    """Convert (cx, cy, w, h) boxes to corner form (x1, y1, x2, y2).

    Args:
      boxes: (..., 4) centre, width, height (any units).

    Returns:
      (..., 4) corners in the same units.
    """
    boxes = _check_boxes("boxes", boxes)
    cx, cy, w, h = boxes[..., 0], boxes[..., 1], boxes[..., 2], boxes[..., 3]
    return jnp.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1)


def box_xyxy_to_cxcywh(boxes: jax.Array) -> jax.Array:
    """Convert corner boxes (x1, y1, x2, y2) to (cx, cy, w, h).

    Args:
      boxes: (..., 4) corners.

    Returns:
      (..., 4) centre, width, height in the same units.
    """
    boxes = _check_boxes("boxes", boxes)
    x1, y1, x2, y2 = boxes[..., 0], boxes[..., 1], boxes[..., 2], boxes[..., 3]
    return jnp.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], axis=-1)


def _size_scale(image_size, boxes: jax.Array) -> jax.Array:
    """(w, h, w, h) factors shaped to broadcast against ``boxes`` at equal rank."""
    size = jnp.asarray(image_size, boxes.dtype)
    if size.ndim not in (1, 2) or size.shape[-1] != 2:
        raise ValueError(
            f"image_size has shape {size.shape}: expected (2,) = (height, width) or (B, 2) per image")
    scale = jnp.stack([size[..., 1], size[..., 0], size[..., 1], size[..., 0]], axis=-1)
    if size.ndim == 2:  # one size per image: boxes are (B, ..., 4)
        if boxes.ndim < 2 or boxes.shape[0] != size.shape[0]:
            raise ValueError(f"image_size has {size.shape[0]} rows but boxes have shape "
                             f"{boxes.shape}: expected boxes (B, ..., 4) with B = {size.shape[0]}")
        return scale.reshape((size.shape[0],) + (1,) * (boxes.ndim - 2) + (4,))
    return scale.reshape((1,) * (boxes.ndim - 1) + (4,))


def denormalize_boxes(boxes: jax.Array, image_size) -> jax.Array:
    """Scale boxes from [0, 1] image fractions to pixels (works for xyxy and cxcywh alike).

    Args:
      boxes: (..., 4) normalised boxes; (B, ..., 4) when ``image_size`` is per image.
      image_size: (height, width), or a (B, 2) array of per-image (height, width).

    Returns:
      (..., 4) boxes in pixels.
    """
    boxes = _check_boxes("boxes", boxes)
    return boxes * _size_scale(image_size, boxes)


def normalize_boxes(boxes: jax.Array, image_size) -> jax.Array:
    """Scale boxes from pixels to [0, 1] image fractions; inverse of ``denormalize_boxes``.

    Args:
      boxes: (..., 4) boxes in pixels; (B, ..., 4) when ``image_size`` is per image.
      image_size: (height, width), or a (B, 2) array of per-image (height, width).

    Returns:
      (..., 4) normalised boxes.
    """
    boxes = _check_boxes("boxes", boxes)
    return boxes / _size_scale(image_size, boxes)


def box_area(boxes: jax.Array) -> jax.Array:
    """Area of (x1, y1, x2, y2) boxes; inverted boxes (x2 < x1 or y2 < y1) count as empty.

    Args:
      boxes: (..., 4) corners.

    Returns:
      (...) areas, >= 0.
    """
    boxes = _check_boxes("boxes", boxes)
    wh = jnp.clip(boxes[..., 2:] - boxes[..., :2], 0.0)  # (..., 2)
    return wh[..., 0] * wh[..., 1]


# ----------------------------------------------------------------------------------------------
# 2. IoU and generalised IoU

# Areas at or below this count as zero when dividing: the ratio is then defined as 0, and the
# gradient stays bounded (by 1 / _TINY) instead of overflowing to inf/NaN.
_TINY = 1e-12


def _safe_ratio(num: jax.Array, den: jax.Array) -> jax.Array:
    ok = den > _TINY
    # the inner where keeps the untaken branch finite, so its (masked) gradient is 0, not NaN
    return jnp.where(ok, num / jnp.where(ok, den, 1.0), 0.0)


def _as_float(boxes: jax.Array) -> jax.Array:
    return boxes.astype(jnp.promote_types(boxes.dtype, jnp.float32))  # areas in >= float32


def _iou_and_giou(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
    """IoU and GIoU of boxes ``a`` and ``b`` (xyxy), elementwise with broadcasting."""
    a, b = _as_float(a), _as_float(b)
    inter_wh = jnp.clip(jnp.minimum(a[..., 2:], b[..., 2:]) - jnp.maximum(a[..., :2], b[..., :2]), 0.0)
    inter = inter_wh[..., 0] * inter_wh[..., 1]
    union = box_area(a) + box_area(b) - inter
    iou = _safe_ratio(inter, union)
    # C: the smallest box enclosing both; GIoU = IoU - |C \ (A u B)| / |C|, in [-1, 1]
    hull_wh = jnp.clip(jnp.maximum(a[..., 2:], b[..., 2:]) - jnp.minimum(a[..., :2], b[..., :2]), 0.0)
    hull = hull_wh[..., 0] * hull_wh[..., 1]
    return iou, iou - _safe_ratio(hull - union, hull)


def _pairwise(a: jax.Array, b: jax.Array, a_name: str, b_name: str):
    a, b = _check_boxes(a_name, a), _check_boxes(b_name, b)
    if a.ndim != b.ndim or a.ndim < 2:
        raise ValueError(f"{a_name} has shape {a.shape} and {b_name} has shape {b.shape}: "
                         "expected (..., P, 4) and (..., M, 4) with the same number of dimensions")
    return a[..., :, None, :], b[..., None, :, :]  # (..., P, 1, 4), (..., 1, M, 4)


def box_iou(boxes1: jax.Array, boxes2: jax.Array) -> jax.Array:
    """Pairwise intersection over union of corner boxes.

    Math: IoU(A, B) = |A n B| / |A u B|; defined as 0 when the union is empty.

    Args:
      boxes1: (..., P, 4) xyxy.
      boxes2: (..., M, 4) xyxy, leading dimensions broadcastable with ``boxes1``'s.

    Returns:
      (..., P, M) IoU in [0, 1].
    """
    return _iou_and_giou(*_pairwise(boxes1, boxes2, "boxes1", "boxes2"))[0]


def generalized_box_iou(boxes1: jax.Array, boxes2: jax.Array, *, pairwise: bool = True) -> jax.Array:
    """Generalised IoU (Rezatofighi et al., CVPR 2019) of corner boxes.

    Math: GIoU(A, B) = IoU(A, B) - |C \\ (A u B)| / |C|, C the smallest box enclosing A and B.
    It lies in [-1, 1], equals IoU when C = A u B (e.g. nested boxes) and tends to -1 for small
    boxes far apart, so it still gives a gradient when boxes do not overlap. Zero-area cases are
    NaN-free: a ratio with an empty denominator is 0.

    Args:
      boxes1: (..., P, 4) xyxy; with ``pairwise=False``, (..., 4).
      boxes2: (..., M, 4) xyxy; with ``pairwise=False``, (..., 4) broadcastable with ``boxes1``.
      pairwise: True for all P x M pairs; False for matched pairs, elementwise.

    Returns:
      (..., P, M) GIoU, or (...) with ``pairwise=False``.
    """
    if pairwise:
        return _iou_and_giou(*_pairwise(boxes1, boxes2, "boxes1", "boxes2"))[1]
    return _iou_and_giou(_check_boxes("boxes1", boxes1), _check_boxes("boxes2", boxes2))[1]


# ----------------------------------------------------------------------------------------------
# 3. Matching


def linear_sum_assignment(cost: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Minimum-cost one-to-one assignment for one cost matrix, in pure JAX (jit-able).

    Same contract as ``scipy.optimize.linear_sum_assignment``: min(n, m) pairs, sorted by row.
    Solved by the Hungarian algorithm (Kuhn 1955) as implemented in
    ``optax.assignment.hungarian_algorithm`` (after Scenic, Dehghani et al. 2022).

    Args:
      cost: (n, m) finite costs.

    Returns:
      (row_ind, col_ind), each (min(n, m),) int32; the optimum is ``cost[row_ind, col_ind].sum()``.
    """
    cost = jnp.asarray(cost)
    if cost.ndim != 2:
        raise ValueError(f"cost has shape {cost.shape}: expected a 2-D (n, m) matrix")
    rows, cols = optax.assignment.hungarian_algorithm(cost)
    order = jnp.argsort(rows)
    return rows[order].astype(jnp.int32), cols[order].astype(jnp.int32)


def matching_cost(pred_logits: jax.Array, pred_boxes: jax.Array, tgt_labels: jax.Array,
                  tgt_boxes: jax.Array, *, w_class: float = 1.0, w_l1: float = 5.0,
                  w_giou: float = 2.0) -> jax.Array:
    """DETR's matching cost between every prediction and every target (Carion et al. 2020).

    Math: cost[q, m] = -w_class p_q(c_m) + w_l1 ||b_q - b_m||_1 - w_giou GIoU(b_q, b_m),
    with p the softmax over C + 1 classes, L1 on (cx, cy, w, h), GIoU on the corner boxes.

    Args:
      pred_logits: (B, Q, C+1) class logits, the last class being "no object".
      pred_boxes: (B, Q, 4) normalised (cx, cy, w, h).
      tgt_labels: (B, M) int in [0, C); padding (-1) gives a zero class term.
      tgt_boxes: (B, M, 4) normalised (cx, cy, w, h).
      w_class, w_l1, w_giou: the cost weights (DETR: 1, 5, 2).

    Returns:
      (B, Q, M) float32 costs.
    """
    pred_logits, pred_boxes, tgt_labels, tgt_boxes, _ = _check_set(
        pred_logits, pred_boxes, tgt_labels, tgt_boxes, None)
    prob = jax.nn.softmax(pred_logits.astype(jnp.float32), axis=-1)  # (B, Q, C+1)
    onehot = jax.nn.one_hot(tgt_labels, pred_logits.shape[-1])  # (B, M, C+1); label -1 -> zeros
    p_class = jnp.einsum("bqc,bmc->bqm", prob, onehot)  # (B, Q, M) probability of m's class
    l1 = jnp.abs(pred_boxes[:, :, None, :] - tgt_boxes[:, None, :, :]).sum(-1)  # (B, Q, M)
    giou = generalized_box_iou(box_cxcywh_to_xyxy(pred_boxes), box_cxcywh_to_xyxy(tgt_boxes))
    return (w_l1 * l1 - w_class * p_class - w_giou * giou).astype(jnp.float32)


def match_targets(cost: jax.Array, valid: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Batched minimum-cost matching of targets to predictions, padded targets excluded.

    Padded columns get one constant cost. When Q >= M every target is matched and a constant
    column cannot change which queries the real targets take (the padding just takes leftover
    queries), so 0 is exact; when Q < M the constant exceeds every real assignment so that real
    targets are preferred. Non-finite costs are replaced by a large finite one, so the solver's
    loops always end. Not differentiable: call it on ``jax.lax.stop_gradient`` costs.

    Args:
      cost: (B, Q, M) cost of giving target m to prediction q.
      valid: (B, M) bool, False for padding; default all True.

    Returns:
      pred_index: (B, M) int32, the prediction matched to each target (0 where unmatched).
      matched: (B, M) bool, True where a valid target got a prediction (all valid ones if Q >= M).
    """
    cost = jnp.asarray(cost, jnp.float32)
    if cost.ndim != 3:
        raise ValueError(f"cost has shape {cost.shape}: expected (B, Q, M)")
    B, Q, M = cost.shape
    valid = jnp.ones((B, M), bool) if valid is None else jnp.asarray(valid, bool)
    if valid.shape != (B, M):
        raise ValueError(f"valid has shape {valid.shape}: expected (B, M) = {(B, M)} to match cost")
    if M == 0 or Q == 0:
        return jnp.zeros((B, M), jnp.int32), jnp.zeros((B, M), bool)
    cost = jnp.where(jnp.isfinite(cost), cost, 1e6)
    valid_cols = valid[:, None, :]  # (B, 1, M)
    if Q >= M:
        fill = jnp.zeros((B, 1, 1), jnp.float32)
    else:  # fewer queries than targets: padding must lose to any real target
        hi = jnp.max(jnp.where(valid_cols, cost, -jnp.inf), axis=(1, 2), keepdims=True)
        lo = jnp.min(jnp.where(valid_cols, cost, jnp.inf), axis=(1, 2), keepdims=True)
        span = jnp.where(jnp.isfinite(hi - lo), hi - lo, 0.0)  # (B, 1, 1); 0 if no valid target
        fill = jnp.where(jnp.isfinite(hi), hi, 0.0) + (Q + 1) * span + 1.0
    cost = jnp.where(valid_cols, cost, fill)  # (B, Q, M)
    rows, cols = jax.vmap(optax.assignment.hungarian_algorithm)(cost)  # (B, min(Q, M)) each
    batch = jnp.arange(B)[:, None]  # (B, 1)
    pred_index = jnp.zeros((B, M), jnp.int32).at[batch, cols].set(rows.astype(jnp.int32))
    matched = jnp.zeros((B, M), bool).at[batch, cols].set(True) & valid
    return pred_index, matched


def hungarian_match(pred_logits: jax.Array, pred_boxes: jax.Array, tgt_labels: jax.Array,
                    tgt_boxes: jax.Array, tgt_valid: jax.Array | None = None, *,
                    w_class: float = 1.0, w_l1: float = 5.0,
                    w_giou: float = 2.0) -> tuple[jax.Array, jax.Array]:
    """DETR's Hungarian matcher: ``matching_cost`` then ``match_targets``, jit- and vmap-safe.

    Gradients are stopped at the inputs (matching is a discrete choice, Carion et al. 2020).

    Args:
      pred_logits: (B, Q, C+1) logits, class C = "no object".
      pred_boxes: (B, Q, 4) normalised (cx, cy, w, h).
      tgt_labels: (B, M) int, -1 for padding.
      tgt_boxes: (B, M, 4) normalised (cx, cy, w, h).
      tgt_valid: (B, M) bool; default ``tgt_labels >= 0``.
      w_class, w_l1, w_giou: cost weights (DETR: 1, 5, 2).

    Returns:
      pred_index: (B, M) int32 prediction for each target; matched: (B, M) bool.
    """
    pred_logits, pred_boxes, tgt_labels, tgt_boxes, tgt_valid = _check_set(
        pred_logits, pred_boxes, tgt_labels, tgt_boxes, tgt_valid)
    cost = matching_cost(jax.lax.stop_gradient(pred_logits), jax.lax.stop_gradient(pred_boxes),
                         tgt_labels, jax.lax.stop_gradient(tgt_boxes),
                         w_class=w_class, w_l1=w_l1, w_giou=w_giou)
    return match_targets(cost, tgt_valid)


def _check_set(logits, boxes, labels, tgt_boxes, valid):
    logits, boxes = jnp.asarray(logits), jnp.asarray(boxes)
    labels, tgt_boxes = jnp.asarray(labels), jnp.asarray(tgt_boxes)
    if logits.ndim != 3 or logits.shape[-1] < 2:
        raise ValueError(f"logits have shape {logits.shape}: expected (B, Q, C+1) with C >= 1")
    B, Q, _ = logits.shape
    if boxes.shape != (B, Q, 4):
        raise ValueError(f"predicted boxes have shape {boxes.shape}: expected (B, Q, 4) = {(B, Q, 4)}")
    if labels.ndim != 2 or labels.shape[0] != B:
        raise ValueError(f"target labels have shape {labels.shape}: expected (B, M) with B = {B}")
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(f"target labels have dtype {labels.dtype}: expected integers (-1 = padding)")
    M = labels.shape[1]
    if tgt_boxes.shape != (B, M, 4):
        raise ValueError(f"target boxes have shape {tgt_boxes.shape}: expected (B, M, 4) = {(B, M, 4)}")
    valid = labels >= 0 if valid is None else jnp.asarray(valid, bool)
    if valid.shape != (B, M):
        raise ValueError(f"target valid mask has shape {valid.shape}: expected (B, M) = {(B, M)}")
    return logits, boxes, labels, tgt_boxes, valid


# ----------------------------------------------------------------------------------------------
# 4. The DETR set loss


def _layer_loss(logits, boxes, labels, tgt_boxes, valid, num_boxes, *, eos_coef, w_class, w_l1,
                w_giou):
    """Loss terms for one decoder layer's predictions (matched on their own)."""
    B, Q, C1 = logits.shape
    no_object = C1 - 1
    pred_index, matched = hungarian_match(logits, boxes, labels, tgt_boxes, valid,
                                          w_class=w_class, w_l1=w_l1, w_giou=w_giou)
    # class targets: "no object" everywhere except the matched queries
    rows = jnp.where(matched, pred_index, Q)  # (B, M); Q is out of range and dropped
    target_class = jnp.full((B, Q), no_object, jnp.int32)
    target_class = target_class.at[jnp.arange(B)[:, None], rows].set(
        labels.astype(jnp.int32), mode="drop")  # (B, Q)
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)  # (B, Q, C+1)
    nll = -jnp.take_along_axis(logp, target_class[..., None], axis=-1)[..., 0]  # (B, Q)
    weight = jnp.where(target_class == no_object, eos_coef, 1.0)  # down-weight the many empties
    loss_ce = jnp.sum(weight * nll) / jnp.sum(weight)  # weighted mean, as torch's cross_entropy
    # box terms on matched pairs only, summed and divided by the number of targets
    src = boxes[jnp.arange(B)[:, None], pred_index].astype(jnp.float32)  # (B, M, 4)
    tgt = tgt_boxes.astype(jnp.float32)
    l1 = jnp.abs(src - tgt).sum(-1)  # (B, M)
    giou = generalized_box_iou(box_cxcywh_to_xyxy(src), box_cxcywh_to_xyxy(tgt), pairwise=False)
    loss_l1 = jnp.sum(jnp.where(matched, l1, 0.0)) / num_boxes
    loss_giou = jnp.sum(jnp.where(matched, 1.0 - giou, 0.0)) / num_boxes
    total = w_class * loss_ce + w_l1 * loss_l1 + w_giou * loss_giou
    # diagnostics, as DETR logs them
    matched_logits = logits[jnp.arange(B)[:, None], pred_index]  # (B, M, C+1)
    correct = matched & (jnp.argmax(matched_logits, -1) == labels)
    accuracy = jnp.sum(correct) / jnp.maximum(jnp.sum(matched), 1)
    n_pred = jnp.sum(jnp.argmax(logits, -1) != no_object, axis=1)  # (B,)
    cardinality = jnp.mean(jnp.abs(n_pred - jnp.sum(valid, axis=1)).astype(jnp.float32))
    metrics = {"loss_ce": loss_ce, "loss_l1": loss_l1, "loss_giou": loss_giou,
               "class_accuracy": accuracy.astype(jnp.float32), "cardinality_error": cardinality}
    return total, metrics


def detr_loss(outputs: Mapping, targets: Mapping, *, num_classes: int, eos_coef: float = 0.1,
              w_class: float = 1.0, w_l1: float = 5.0, w_giou: float = 2.0,
              aux: bool = True) -> tuple[jax.Array, dict[str, jax.Array]]:
    """DETR's set prediction loss (Carion et al. 2020, section 3.1 and appendix A.2).

    Math: per decoder layer, after Hungarian matching with the same weights,
    L = w_class CE_w + w_l1 sum|b - b^| / N + w_giou sum(1 - GIoU(b, b^)) / N,
    CE_w the cross-entropy averaged with weight ``eos_coef`` on "no object" targets and 1
    elsewhere, N = max(number of valid targets in the batch, 1). Auxiliary layers (each matched
    on its own) add their own L. Jit-able and differentiable; matching sees no gradient.

    Args:
      outputs: {"logits": (B, Q, C+1), "boxes": (B, Q, 4) normalised cxcywh, optional "aux":
        a list of {"logits", "boxes"} for earlier decoder layers}.
      targets: {"labels": (B, M) int in [0, C), -1 for padding; "boxes": (B, M, 4) normalised
        cxcywh; optional "valid": (B, M) bool, default labels >= 0}.
      num_classes: C, the number of real classes (the logits carry C + 1).
      eos_coef: class weight of "no object" (DETR: 0.1).
      w_class, w_l1, w_giou: loss and matching weights (DETR: 1, 5, 2).
      aux: include the auxiliary decoder layers.

    Returns:
      (loss, metrics): scalar loss; metrics has "loss", "loss_ce", "loss_l1", "loss_giou" (last
      layer, unweighted), "loss_aux" (weighted sum over auxiliary layers), "class_accuracy" (of
      matched queries) and "cardinality_error" (|#predicted objects - #targets| per image).
    """
    logits, boxes, labels, tgt_boxes, valid = _check_set(
        outputs["logits"], outputs["boxes"], targets["labels"], targets["boxes"],
        targets.get("valid"))
    if logits.shape[-1] != num_classes + 1:
        raise ValueError(f"logits have {logits.shape[-1]} classes but num_classes={num_classes}: "
                         "expected num_classes + 1 (the last is 'no object')")
    layers = [{"logits": logits, "boxes": boxes}] + list(outputs.get("aux", ()) if aux else ())
    for i, layer in enumerate(layers[1:]):
        if layer["logits"].shape != logits.shape or layer["boxes"].shape != boxes.shape:
            raise ValueError(f"outputs['aux'][{i}] has logits {layer['logits'].shape} and boxes "
                             f"{layer['boxes'].shape}: expected {logits.shape} and {boxes.shape}")
    num_boxes = jnp.maximum(jnp.sum(valid), 1).astype(jnp.float32)
    # all L decoder layers at once: one batched matching instead of L separate solver loops
    all_logits = jnp.stack([jnp.asarray(layer["logits"]) for layer in layers])  # (L, B, Q, C+1)
    all_boxes = jnp.stack([jnp.asarray(layer["boxes"]) for layer in layers])  # (L, B, Q, 4)
    per_layer = functools.partial(_layer_loss, eos_coef=eos_coef, w_class=w_class, w_l1=w_l1,
                                  w_giou=w_giou)
    totals, metrics = jax.vmap(per_layer, in_axes=(0, 0, None, None, None, None))(
        all_logits, all_boxes, labels, tgt_boxes, valid, num_boxes)  # (L,) each
    loss_aux = jnp.sum(totals[1:])
    loss = totals[0] + loss_aux
    return loss, {"loss": loss, "loss_aux": loss_aux, **{k: v[0] for k, v in metrics.items()}}


# ----------------------------------------------------------------------------------------------
# 5. Post-processing


def postprocess(outputs: Mapping, image_size) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Turn DETR outputs into pixel boxes, scores and labels, as DETR's ``PostProcess``.

    Every query yields one detection: score = the highest probability among the real classes
    (softmax over all C + 1, then "no object" dropped), label = that class. No thresholding.

    Args:
      outputs: {"logits": (B, Q, C+1), "boxes": (B, Q, 4) normalised cxcywh}.
      image_size: (height, width), or (B, 2) per image.

    Returns:
      boxes (B, Q, 4) xyxy pixels, scores (B, Q), labels (B, Q) int32. Row b is image b's
      detections: ``coco_ap(boxes, scores, labels, ...)`` accepts these batched arrays directly.
    """
    logits, boxes = jnp.asarray(outputs["logits"]), jnp.asarray(outputs["boxes"])
    if logits.ndim != 3 or boxes.shape != logits.shape[:2] + (4,):
        raise ValueError(f"outputs have logits {logits.shape} and boxes {boxes.shape}: "
                         "expected (B, Q, C+1) and (B, Q, 4)")
    prob = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)[..., :-1]  # (B, Q, C)
    scores, labels = prob.max(-1), prob.argmax(-1).astype(jnp.int32)
    return denormalize_boxes(box_cxcywh_to_xyxy(boxes), image_size), scores, labels


# ----------------------------------------------------------------------------------------------
# 6. COCO average precision (numpy; pycocotools' COCOeval, bbox, area "all", no crowd)

COCO_IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)  # bit-identical to pycocotools' iouThrs
_RECALL_POINTS = np.linspace(0.0, 1.0, 101)  # 101-point interpolation
_AREA_ALL = (0.0, 1e10)  # pycocotools' area range "all": [0 ** 2, 1e5 ** 2]


def _per_image(name: str, values, n_images: int | None, tail: tuple[int, ...], integer: bool):
    if hasattr(values, "shape"):  # one batched array: its rows are the images
        values = np.asarray(values)
    arrays = [np.asarray(v) for v in values]
    if n_images is not None and len(arrays) != n_images:
        raise ValueError(f"{name} has {len(arrays)} images but pred_boxes has {n_images}: "
                         "expected one array per image in every argument")
    out = []
    for i, a in enumerate(arrays):
        if a.size == 0:
            a = a.reshape((0,) + tail)
        if a.ndim != 1 + len(tail) or a.shape[1:] != tail:
            raise ValueError(f"{name}[{i}] has shape {a.shape}: expected (n,) + {tail}")
        if integer and not np.issubdtype(a.dtype, np.integer) and a.size:
            raise TypeError(f"{name}[{i}] has dtype {a.dtype}: expected integer class labels")
        if not integer and not np.all(np.isfinite(a)):
            raise ValueError(f"{name}[{i}] contains NaN or inf: expected finite values")
        if len(tail) == 1 and np.any(a[:, 2:] < a[:, :2]):
            raise ValueError(f"{name}[{i}] has a box with x2 < x1 or y2 < y1: expected "
                             "(x1, y1, x2, y2) corners (were (x, y, w, h) boxes passed?)")
        out.append(a.astype(np.int64 if integer else np.float64))
    return out


def _coco_iou(det_xywh: np.ndarray, gt_xywh: np.ndarray) -> np.ndarray:
    """(D, G) IoU with pycocotools' arithmetic (maskApi.c ``bbIou``, no +1, on x, y, w, h)."""
    d, g = det_xywh[:, None, :], gt_xywh[None, :, :]  # (D, 1, 4), (1, G, 4)
    w = np.minimum(d[..., 2] + d[..., 0], g[..., 2] + g[..., 0]) - np.maximum(d[..., 0], g[..., 0])
    h = np.minimum(d[..., 3] + d[..., 1], g[..., 3] + g[..., 1]) - np.maximum(d[..., 1], g[..., 1])
    overlap = (w > 0) & (h > 0)
    inter = w * h
    union = d[..., 2] * d[..., 3] + g[..., 2] * g[..., 3] - inter
    return np.where(overlap, inter / np.where(overlap, union, 1.0), 0.0)


def _evaluate_image(det_xywh, det_scores, gt_xywh, thresholds, max_dets):
    """One (image, category): greedy matching at every IoU threshold, as ``evaluateImg``."""
    order = np.argsort(-det_scores, kind="mergesort")[:max_dets]  # stable, best first
    det_xywh, det_scores = det_xywh[order], det_scores[order]
    gt_area = gt_xywh[:, 2] * gt_xywh[:, 3]
    gt_ignore = (gt_area < _AREA_ALL[0]) | (gt_area > _AREA_ALL[1])
    gt_xywh, gt_ignore = gt_xywh[np.argsort(gt_ignore, kind="mergesort")], np.sort(gt_ignore)
    ious = _coco_iou(det_xywh, gt_xywh)  # (D, G)
    T, (D, G) = len(thresholds), ious.shape
    min_iou = np.minimum(thresholds, 1 - 1e-10)[:, None]  # (T, 1)
    gt_taken = np.zeros((T, G), bool)
    det_matched, det_ignore = np.zeros((T, D), bool), np.zeros((T, D), bool)
    for i in range(D if G else 0):
        free = (ious[i][None, :] >= min_iou) & ~gt_taken  # (T, G) candidates
        # regular GT first; an ignored GT only when no regular one qualifies
        regular = free & ~gt_ignore[None, :]
        cand = np.where(regular.any(1, keepdims=True), regular, free)
        # best IoU; on ties pycocotools keeps the later GT, hence argmax over the reversed row
        j = G - 1 - np.argmax(np.where(cand, ious[i][None, :], -1.0)[:, ::-1], axis=1)  # (T,)
        hit = cand.any(1)  # (T,)
        gt_taken[hit, j[hit]] = True
        det_matched[:, i] = hit
        det_ignore[:, i] = hit & gt_ignore[j]
    det_area = det_xywh[:, 2] * det_xywh[:, 3]
    det_ignore |= ~det_matched & ((det_area < _AREA_ALL[0]) | (det_area > _AREA_ALL[1]))[None, :]
    return det_scores, det_matched, det_ignore, int(np.sum(~gt_ignore))


def _precision_curve(scores, matched, ignore, n_gt):
    """(T, 101) interpolated precision for one category, as ``COCOeval.accumulate``."""
    order = np.argsort(-scores, kind="mergesort")
    matched, ignore = matched[:, order], ignore[:, order]
    tp = np.cumsum(matched & ~ignore, axis=1).astype(float)  # (T, D)
    fp = np.cumsum(~matched & ~ignore, axis=1).astype(float)
    T, D = tp.shape
    if D == 0:
        return np.zeros((T, len(_RECALL_POINTS)))
    recall = tp / n_gt
    precision = tp / (fp + tp + np.spacing(1))
    precision = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]  # monotone envelope
    curve = np.zeros((T, len(_RECALL_POINTS)))
    for t in range(T):
        idx = np.searchsorted(recall[t], _RECALL_POINTS, side="left")  # first det reaching r
        reached = idx < D  # recall levels never reached keep precision 0
        curve[t, reached] = precision[t, idx[reached]]
    return curve


def coco_ap(pred_boxes: Sequence, pred_scores: Sequence, pred_labels: Sequence,
            gt_boxes: Sequence, gt_labels: Sequence, *, iou_thresholds=None,
            max_dets: int = 100) -> dict[str, float]:
    """COCO box average precision, following pycocotools' ``COCOeval`` (Lin et al. 2014).

    Per category and IoU threshold: each image's detections sorted by score (stable) and cut to
    ``max_dets``, then greedily matched, best score first, to the unmatched GT of highest IoU
    >= threshold; all images' detections pooled by score; precision made monotone; sampled at
    101 recall points (``searchsorted`` left; unreached recall gives 0). AP is the mean over
    thresholds, recall points and the categories that have ground truth. Matches pycocotools for
    bbox, area range "all", maxDets=max_dets, no crowd, categories = all labels present,
    including its quirks: IoU without the +1 pixel convention, computed on (x, y, w, h); equal-IoU
    ties go to the later GT; ``max_dets`` applies per image *and category*.

    Args:
      pred_boxes: per image, (D_i, 4) (x1, y1, x2, y2) in pixels; a (B, D, 4) array also works.
      pred_scores: per image, (D_i,) confidences.
      pred_labels: per image, (D_i,) int category ids.
      gt_boxes: per image, (G_i, 4) (x1, y1, x2, y2) in pixels.
      gt_labels: per image, (G_i,) int category ids.
      iou_thresholds: thresholds averaged into "AP"; default 0.50:0.05:0.95.
      max_dets: detections kept per image and category, highest scores first.

    Returns:
      {"AP", "AP50", "AP75"} floats in [0, 1]; -1.0 when there is no ground truth at all (as
      pycocotools). No predictions with ground truth present give 0.0.
    """
    pred_boxes = _per_image("pred_boxes", pred_boxes, None, (4,), False)
    n = len(pred_boxes)
    pred_scores = _per_image("pred_scores", pred_scores, n, (), False)
    pred_labels = _per_image("pred_labels", pred_labels, n, (), True)
    gt_boxes = _per_image("gt_boxes", gt_boxes, n, (4,), False)
    gt_labels = _per_image("gt_labels", gt_labels, n, (), True)
    for name, per_image, boxes in (("pred_scores", pred_scores, pred_boxes),
                                   ("pred_labels", pred_labels, pred_boxes),
                                   ("gt_labels", gt_labels, gt_boxes)):
        for i, (a, b) in enumerate(zip(per_image, boxes)):
            if len(a) != len(b):
                raise ValueError(f"{name}[{i}] has {len(a)} entries but its boxes have {len(b)}: "
                                 "expected one per box")
    if not isinstance(max_dets, (int, np.integer)) or max_dets < 1:
        raise ValueError(f"max_dets={max_dets!r}: expected a positive int")
    thresholds = COCO_IOU_THRESHOLDS if iou_thresholds is None else np.asarray(iou_thresholds, float)
    if thresholds.ndim != 1 or thresholds.size == 0 or np.any((thresholds < 0) | (thresholds > 1)):
        raise ValueError(f"iou_thresholds={iou_thresholds!r}: expected a 1-D list in [0, 1]")
    thresholds = np.concatenate([thresholds, [0.5, 0.75]])  # last two give AP50 and AP75

    def xywh(b):  # pycocotools stores (x, y, w, h) and recomputes x + w
        return np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1)

    curves = []  # one (T, 101) curve per category with ground truth
    for category in np.unique(np.concatenate(gt_labels or [np.zeros(0, np.int64)])):
        per_image = [
            _evaluate_image(xywh(pb[pl == category]), ps[pl == category],
                            xywh(gb[gl == category]), thresholds, max_dets)
            for pb, ps, pl, gb, gl in zip(pred_boxes, pred_scores, pred_labels, gt_boxes, gt_labels)]
        n_gt = sum(r[3] for r in per_image)
        if n_gt == 0:  # only ignored GT: excluded, as pycocotools' -1
            continue
        curves.append(_precision_curve(np.concatenate([r[0] for r in per_image]),
                                       np.concatenate([r[1] for r in per_image], axis=1),
                                       np.concatenate([r[2] for r in per_image], axis=1), n_gt))
    if not curves:
        return {"AP": -1.0, "AP50": -1.0, "AP75": -1.0}
    curves = np.stack(curves)  # (K, T + 2, 101)
    return {"AP": float(np.mean(curves[:, :-2])), "AP50": float(np.mean(curves[:, -2])),
            "AP75": float(np.mean(curves[:, -1]))}
