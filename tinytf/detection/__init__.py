"""Set-based object detection for DETR: boxes, IoU/GIoU, Hungarian matching, the loss, and AP.

DETR (Carion et al., "End-to-End Object Detection with Transformers", ECCV 2020) predicts a
fixed set of Q (class, box) pairs per image. Training first finds the one-to-one assignment of
predictions to ground-truth objects with the lowest cost (the Hungarian algorithm, Kuhn 1955),
then pushes matched predictions towards their objects and every other prediction towards the
extra "no object" class. No anchors, no non-maximum suppression: duplicates cost loss.

Read in this order:
1. boxes.py — box formats: normalised (cx, cy, w, h) as the model predicts them, (x1, y1, x2, y2) in pixels;
   IoU and generalised IoU (Rezatofighi et al., CVPR 2019), NaN-free for zero-area boxes;
2. matching.py — the cost matrix and a pure-JAX Hungarian solver (optax's, after Scenic) that runs
   under ``jax.vmap``/``jax.jit``, so the whole loss is one compiled function;
3. loss.py — the DETR set loss: weighted cross-entropy + L1 + GIoU, with auxiliary decoder layers;
   post-processing: model outputs to pixel boxes, scores and labels;
4. ap.py — COCO average precision in numpy, following pycocotools' ``COCOeval`` step by step.

Conventions: the last class index ``C`` of the ``C + 1`` logits is "no object"; padded targets
carry label -1 and ``valid = False``; images are (height, width).
"""

from tinytf.detection.ap import coco_ap
from tinytf.detection.boxes import (box_area, box_cxcywh_to_xyxy, box_iou, box_xyxy_to_cxcywh, denormalize_boxes,
                                    generalized_box_iou, normalize_boxes)
from tinytf.detection.loss import centre_recall, detr_loss, postprocess
from tinytf.detection.matching import hungarian_match, linear_sum_assignment, match_targets, matching_cost

__all__ = ["box_area", "box_cxcywh_to_xyxy", "box_iou", "box_xyxy_to_cxcywh", "denormalize_boxes",
           "generalized_box_iou", "normalize_boxes", "linear_sum_assignment", "matching_cost", "match_targets",
           "hungarian_match", "detr_loss", "postprocess", "centre_recall", "coco_ap"]
