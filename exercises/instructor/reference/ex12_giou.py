"""Reference for Exercise 12 (exercises/12_giou.py): box format and generalised IoU."""

import numpy as np


def box_cxcywh_to_xyxy(boxes):
    b = np.asarray(boxes, np.float64)
    cx, cy, w, h = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1)


def generalized_box_iou(boxes1, boxes2):
    a = np.asarray(boxes1, np.float64)[:, None, :]  # (M, 1, 4)
    b = np.asarray(boxes2, np.float64)[None, :, :]  # (1, K, 4)
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = iw * ih  # (M, K)
    union = area_a + area_b - inter
    cw = np.maximum(a[..., 2], b[..., 2]) - np.minimum(a[..., 0], b[..., 0])
    ch = np.maximum(a[..., 3], b[..., 3]) - np.minimum(a[..., 1], b[..., 1])
    hull = cw * ch  # area of the smallest enclosing box C
    return inter / union - (hull - union) / hull
