"""COCO average precision and recall in numpy, following pycocotools' COCOeval step by step."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


# ----------------------------------------------------------------------------------------------
# COCO average precision and recall (numpy; pycocotools' COCOeval for bbox, step by step)

COCO_IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)  # bit-identical to pycocotools' iouThrs
_RECALL_POINTS = np.linspace(0.0, 1.0, 101)  # 101-point interpolation
COCO_AREA_RANGES = {  # pycocotools' areaRng, in square pixels
    "all": (0.0, 1e5 ** 2), "small": (0.0, 32.0 ** 2), "medium": (32.0 ** 2, 96.0 ** 2), "large": (96.0 ** 2, 1e5 ** 2)}
AR_MAX_DETS = (1, 10, 100)  # pycocotools' maxDets


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


def _coco_iou(det_xywh: np.ndarray, gt_xywh: np.ndarray, gt_crowd: np.ndarray) -> np.ndarray:
    """(D, G) IoU with pycocotools' arithmetic (maskApi.c ``bbIou``, no +1, on x, y, w, h).

    For a crowd region the overlap is divided by the detection's area, not the union:
    a detection inside a crowd counts as matching it.
    """
    d, g = det_xywh[:, None, :], gt_xywh[None, :, :]  # (D, 1, 4), (1, G, 4)
    w = np.minimum(d[..., 2] + d[..., 0], g[..., 2] + g[..., 0]) - np.maximum(d[..., 0], g[..., 0])
    h = np.minimum(d[..., 3] + d[..., 1], g[..., 3] + g[..., 1]) - np.maximum(d[..., 1], g[..., 1])
    overlap = (w > 0) & (h > 0)
    inter = w * h
    det_area = d[..., 2] * d[..., 3]
    union = np.where(gt_crowd[None, :], det_area, det_area + g[..., 2] * g[..., 3] - inter)
    return np.where(overlap, inter / np.where(overlap, union, 1.0), 0.0)


def _evaluate_image(det_xywh, det_scores, gt_xywh, gt_crowd, thresholds, max_dets, area):
    """One (image, category, area range): greedy matching at every IoU threshold, as ``evaluateImg``.

    Ground truth outside the area range, and crowd regions, are "ignored": a detection
    matched to one is neither a true nor a false positive. Crowd regions can absorb any
    number of detections. Returns the detections best-first with their matches.
    """
    order = np.argsort(-det_scores, kind="mergesort")[:max_dets]  # stable, best first
    det_xywh, det_scores = det_xywh[order], det_scores[order]
    gt_area = gt_xywh[:, 2] * gt_xywh[:, 3]
    gt_ignore = gt_crowd | (gt_area < area[0]) | (gt_area > area[1])
    gt_order = np.argsort(gt_ignore, kind="mergesort")  # regular ground truth first
    gt_xywh, gt_crowd, gt_ignore = gt_xywh[gt_order], gt_crowd[gt_order], gt_ignore[gt_order]
    ious = _coco_iou(det_xywh, gt_xywh, gt_crowd)  # (D, G)
    T, (D, G) = len(thresholds), ious.shape
    min_iou = np.minimum(thresholds, 1 - 1e-10)[:, None]  # (T, 1)
    gt_taken = np.zeros((T, G), bool)
    det_matched, det_ignore = np.zeros((T, D), bool), np.zeros((T, D), bool)
    for i in range(D if G else 0):
        free = (ious[i][None, :] >= min_iou) & (~gt_taken | gt_crowd[None, :])  # (T, G) candidates
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
    det_ignore |= ~det_matched & ((det_area < area[0]) | (det_area > area[1]))[None, :]
    return det_scores, det_matched, det_ignore, int(np.sum(~gt_ignore))


def _accumulate(per_image, max_det: int):
    """Pool one category's images, each cut to its `max_det` best detections, as ``COCOeval.accumulate``.

    Returns ((T, 101) interpolated precision, (T,) recall), or None without regular ground truth.
    """
    n_gt = sum(r[3] for r in per_image)
    if n_gt == 0:  # only ignored GT: excluded, as pycocotools' -1
        return None
    scores = np.concatenate([r[0][:max_det] for r in per_image])
    order = np.argsort(-scores, kind="mergesort")
    matched = np.concatenate([r[1][:, :max_det] for r in per_image], axis=1)[:, order]
    ignore = np.concatenate([r[2][:, :max_det] for r in per_image], axis=1)[:, order]
    tp = np.cumsum(matched & ~ignore, axis=1).astype(float)  # (T, D)
    fp = np.cumsum(~matched & ~ignore, axis=1).astype(float)
    T, D = tp.shape
    if D == 0:
        return np.zeros((T, len(_RECALL_POINTS))), np.zeros(T)
    recall = tp / n_gt
    precision = tp / (fp + tp + np.spacing(1))
    precision = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]  # monotone envelope
    curve = np.zeros((T, len(_RECALL_POINTS)))
    for t in range(T):
        idx = np.searchsorted(recall[t], _RECALL_POINTS, side="left")  # first det reaching r
        reached = idx < D  # recall levels never reached keep precision 0
        curve[t, reached] = precision[t, idx[reached]]
    return curve, recall[:, -1]


def coco_ap(pred_boxes: Sequence, pred_scores: Sequence, pred_labels: Sequence,
            gt_boxes: Sequence, gt_labels: Sequence, *, gt_crowd: Sequence | None = None,
            iou_thresholds=None, max_dets: int = 100, area_ranges: dict | None = None) -> dict[str, float]:
    """COCO box average precision and recall, as pycocotools' ``COCOeval.summarize`` reports them.

    Per category, area range and IoU threshold: each image's detections sorted by score
    (stable) and cut to ``max_dets``, then greedily matched, best score first, to the
    unmatched ground truth of highest IoU >= threshold (regular boxes before ignored ones);
    all images' detections pooled by score; precision made monotone; sampled at 101 recall
    points (``searchsorted`` left; unreached recall gives 0). AP is the mean over thresholds,
    recall points and the categories that have (non-ignored) ground truth; AR@m the mean over
    thresholds and categories of the recall reached with each image's m best detections
    (Lin et al. 2014). pycocotools' quirks are kept: IoU without the +1 pixel convention,
    computed on (x, y, w, h); equal-IoU ties go to the later ground truth; ``max_dets``
    applies per image *and category*.

    Crowd ground truth (COCO's ``iscrowd``) is ignored the pycocotools way: it never counts
    as a miss, a detection that overlaps it (overlap / detection area >= threshold) is
    neither a true nor a false positive, and one crowd region can absorb many detections.
    Area ranges ignore ground truth (and unmatched detections) whose box area w * h lies
    outside the range.

    Args:
      pred_boxes: per image, (D_i, 4) (x1, y1, x2, y2) in pixels; a (B, D, 4) array also works.
      pred_scores: per image, (D_i,) confidences.
      pred_labels: per image, (D_i,) int category ids.
      gt_boxes: per image, (G_i, 4) (x1, y1, x2, y2) in pixels.
      gt_labels: per image, (G_i,) int category ids.
      gt_crowd: optional per image, (G_i,) bool: crowd regions (COCO's iscrowd).
      iou_thresholds: thresholds averaged into "AP" and "AR..."; default 0.50:0.05:0.95.
      max_dets: detections kept per image and category for AP (and the largest AR).
      area_ranges: {"small": (lo, hi), "medium": ..., "large": ...} in square pixels; default
        COCO's (below 32^2, 32^2-96^2, above 96^2), which suits images of COCO's size. For
        small images or normalised boxes scale them to your units (e.g. a 64 px image is
        "small" throughout under COCO's ranges).

    Returns:
      {"AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large", "AR1", "AR10", "AR100",
      "AR_small", "AR_medium", "AR_large"} floats in [0, 1] ("AR100" is AR@max_dets); -1.0 for
      a value with no ground truth in its range (as pycocotools). No predictions with ground
      truth present give 0.0.
    """
    pred_boxes = _per_image("pred_boxes", pred_boxes, None, (4,), False)
    n = len(pred_boxes)
    pred_scores = _per_image("pred_scores", pred_scores, n, (), False)
    pred_labels = _per_image("pred_labels", pred_labels, n, (), True)
    gt_boxes = _per_image("gt_boxes", gt_boxes, n, (4,), False)
    gt_labels = _per_image("gt_labels", gt_labels, n, (), True)
    if gt_crowd is None:
        gt_crowd = [np.zeros(len(g), bool) for g in gt_boxes]
    else:
        gt_crowd = [np.asarray(g).astype(np.int64) for g in gt_crowd]
        gt_crowd = [a.astype(bool) for a in _per_image("gt_crowd", gt_crowd, n, (), True)]
    for name, per_image, boxes in (("pred_scores", pred_scores, pred_boxes),
                                   ("pred_labels", pred_labels, pred_boxes),
                                   ("gt_labels", gt_labels, gt_boxes), ("gt_crowd", gt_crowd, gt_boxes)):
        for i, (a, b) in enumerate(zip(per_image, boxes)):
            if len(a) != len(b):
                raise ValueError(f"{name}[{i}] has {len(a)} entries but its boxes have {len(b)}: "
                                 "expected one per box")
    if isinstance(max_dets, bool) or not isinstance(max_dets, (int, np.integer)) or max_dets < 1:
        raise ValueError(f"max_dets={max_dets!r}: expected a positive int")
    thresholds = COCO_IOU_THRESHOLDS if iou_thresholds is None else np.asarray(iou_thresholds, float)
    if thresholds.ndim != 1 or thresholds.size == 0 or np.any((thresholds < 0) | (thresholds > 1)):
        raise ValueError(f"iou_thresholds={iou_thresholds!r}: expected a 1-D list in [0, 1]")
    ranges = dict(COCO_AREA_RANGES)
    if area_ranges is not None:
        unknown = set(area_ranges) - {"small", "medium", "large"}
        if unknown:
            raise ValueError(f"area_ranges has unknown keys {sorted(unknown)}: expected small, medium, large")
        ranges.update({k: (float(lo), float(hi)) for k, (lo, hi) in area_ranges.items()})
    thresholds = np.concatenate([thresholds, [0.5, 0.75]])  # the last two give AP50 and AP75
    n_avg = len(thresholds) - 2
    max_ar = tuple(sorted({1, 10, int(max_dets)}))

    def xywh(b):  # pycocotools stores (x, y, w, h) and recomputes x + w
        return np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1)

    curves = {name: [] for name in ranges}  # per area: one (T + 2, 101) curve per category
    recalls = {(name, m): [] for name in ranges for m in max_ar}  # per (area, maxDets): (T + 2,) recalls
    for category in np.unique(np.concatenate(gt_labels or [np.zeros(0, np.int64)])):
        for name, area in ranges.items():
            per_image = [
                _evaluate_image(xywh(pb[pl == category]), ps[pl == category], xywh(gb[gl == category]),
                                gc[gl == category], thresholds, max_dets, area)
                for pb, ps, pl, gb, gl, gc in zip(pred_boxes, pred_scores, pred_labels, gt_boxes, gt_labels,
                                                  gt_crowd)]
            for m in max_ar:
                result = _accumulate(per_image, m)
                if result is None:
                    break
                if m == max_dets:
                    curves[name].append(result[0])
                recalls[name, m].append(result[1])

    def mean_ap(name, rows=slice(0, n_avg)):
        return float(np.mean(np.stack(curves[name])[:, rows])) if curves[name] else -1.0

    def mean_ar(name, m):
        return float(np.mean(np.stack(recalls[name, m])[:, :n_avg])) if recalls[name, m] else -1.0

    return {"AP": mean_ap("all"), "AP50": mean_ap("all", -2), "AP75": mean_ap("all", -1),
            "AP_small": mean_ap("small"), "AP_medium": mean_ap("medium"), "AP_large": mean_ap("large"),
            "AR1": mean_ar("all", 1), "AR10": mean_ar("all", 10), "AR100": mean_ar("all", max_dets),
            "AR_small": mean_ar("small", max_dets), "AR_medium": mean_ar("medium", max_dets),
            "AR_large": mean_ar("large", max_dets)}
