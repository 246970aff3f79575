"""Box formats, IoU and generalised IoU (Rezatofighi et al., CVPR 2019), NaN-free for zero-area boxes."""

from __future__ import annotations


import jax
import jax.numpy as jnp


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


