"""Hungarian matching for DETR: the cost matrix and a pure-JAX solver (optax) under vmap/jit."""

from __future__ import annotations


import jax
import jax.numpy as jnp
import optax

from tinytf.detection.boxes import box_cxcywh_to_xyxy, generalized_box_iou

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
    pred_logits, pred_boxes, tgt_labels, tgt_boxes, _ = check_prediction_set(
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
    pred_logits, pred_boxes, tgt_labels, tgt_boxes, tgt_valid = check_prediction_set(
        pred_logits, pred_boxes, tgt_labels, tgt_boxes, tgt_valid)
    cost = matching_cost(jax.lax.stop_gradient(pred_logits), jax.lax.stop_gradient(pred_boxes),
                         tgt_labels, jax.lax.stop_gradient(tgt_boxes),
                         w_class=w_class, w_l1=w_l1, w_giou=w_giou)
    return match_targets(cost, tgt_valid)


def check_prediction_set(logits, boxes, labels, tgt_boxes, valid):
    """Check a batch of predictions (B, Q, C+1), (B, Q, 4) against targets (B, M), (B, M, 4), (B, M); as arrays."""
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


