"""Exercise 12 — box format and generalised IoU.           Lesson: detr-queries

DETR (Carion et al. 2020) predicts boxes as (cx, cy, w, h), centre and size, and
scores them against the targets with the generalised IoU of Rezatofighi et al.
2019, "Generalized Intersection over Union". Plain IoU is 0 for every pair of
disjoint boxes, however far apart, so it gives no gradient; GIoU subtracts the
part of the smallest enclosing box C that the two boxes do not cover:

    GIoU(A, B) = IoU(A, B) - (|C| - |A u B|) / |C|,   IoU = |A n B| / |A u B|

It lies in (-1, 1]: 1 for identical boxes, negative for distant ones.
Boxes here are (x0, y0, x1, y1) with x1 > x0, y1 > y0. Use numpy or jax.numpy.
"""

import numpy as np


def box_cxcywh_to_xyxy(boxes):
    """(..., 4) boxes (cx, cy, w, h) -> (..., 4) boxes (x0, y0, x1, y1)."""
    raise NotImplementedError("Exercise 12: write box_cxcywh_to_xyxy")


def generalized_box_iou(boxes1, boxes2):
    """Pairwise GIoU.

    Args:
      boxes1: (M, 4) boxes (x0, y0, x1, y1).
      boxes2: (K, 4) boxes (x0, y0, x1, y1).

    Returns:
      (M, K) float, entry [i, j] = GIoU(boxes1[i], boxes2[j]).
    """
    raise NotImplementedError("Exercise 12: write generalized_box_iou")
