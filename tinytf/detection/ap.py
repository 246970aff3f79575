"""COCO average precision in numpy, following pycocotools' COCOeval step by step."""

from __future__ import annotations


from collections.abc import Sequence

import numpy as np


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

