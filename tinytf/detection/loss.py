"""The DETR set loss (weighted cross-entropy + L1 + GIoU, auxiliary layers) and post-processing."""

from __future__ import annotations

import functools
from collections.abc import Mapping

import jax
import jax.numpy as jnp

from tinytf.detection.boxes import box_cxcywh_to_xyxy, denormalize_boxes, generalized_box_iou
from tinytf.detection.matching import check_prediction_set, hungarian_match

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
    logits, boxes, labels, tgt_boxes, valid = check_prediction_set(
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




def centre_recall(outputs: Mapping, labels, boxes, valid, *, tolerance: float, min_score: float = 0.5) -> jax.Array:
    """Fraction of objects found by a confident query of the right class whose centre is close.

    A detection metric for objects that are cells of a feature grid (the detr-queries lesson):
    object k is recalled if some query's top real class is k's class with probability
    >= ``min_score`` and its predicted centre is within ``tolerance`` of k's centre in both x
    and y (half a cell: tolerance = 0.5 / grid). Duplicates are not penalised (AP does that).

    Args:
      outputs: {"logits": (B, Q, C+1), "boxes": (B, Q, 4) normalised cxcywh}.
      labels: (B, M) int classes (-1 padding). boxes: (B, M, 4) cxcywh. valid: (B, M) bool.
      tolerance: largest |dx| and |dy| of a hit, in normalised units.
      min_score: smallest class probability of a detection.

    Returns:
      scalar: hits / number of valid objects.
    """
    logits, pred = jnp.asarray(outputs["logits"]), jnp.asarray(outputs["boxes"])
    labels, boxes, valid = jnp.asarray(labels), jnp.asarray(boxes), jnp.asarray(valid, bool)
    if labels.shape != valid.shape or boxes.shape != labels.shape + (4,) or logits.shape[0] != labels.shape[0]:
        raise ValueError(f"labels {labels.shape}, boxes {boxes.shape}, valid {valid.shape} and logits "
                         f"{logits.shape}: expected (B, M), (B, M, 4), (B, M) and (B, Q, C+1)")
    if not tolerance > 0:
        raise ValueError(f"tolerance must be > 0, got {tolerance!r}")
    return _centre_recall(logits, pred, labels, boxes, valid, tolerance, min_score)


@jax.jit  # one compiled program, also when called eagerly (as a fit callback it runs every few steps)
def _centre_recall(logits, pred, labels, boxes, valid, tolerance, min_score) -> jax.Array:
    prob = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)[..., :-1]  # (B, Q, C)
    score, label = prob.max(-1), prob.argmax(-1)  # (B, Q)
    close = jnp.all(jnp.abs(pred[:, :, None, :2] - boxes[:, None, :, :2]) <= tolerance, axis=-1)  # (B, Q, M)
    hit = close & (label[:, :, None] == labels[:, None, :]) & (score[:, :, None] >= min_score)
    found = hit.any(1) & valid  # (B, M)
    return found.sum() / jnp.maximum(valid.sum(), 1)
