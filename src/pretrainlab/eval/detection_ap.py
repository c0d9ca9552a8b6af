"""Detection average precision at an IoU threshold (AP50 at 0.5), per class, as PASCAL VOC and COCO count it.

For one class: every detection of that class over all test images is ranked by score (descending; equal
scores keep their input order). Going down the ranking, a detection is a true positive when some
ground-truth box of its class in its image that no higher-ranked detection has already taken overlaps it
with IoU >= the threshold (it takes the unmatched one with the highest IoU, as COCO's matcher does);
otherwise it is a false positive (a duplicate of a matched box counts as a false positive). Precision and
recall follow at every rank; AP is the area under the interpolated precision-recall curve with ALL points
(VOC 2010 onwards): precision at recall r is replaced by the best precision at any recall >= r, and
AP = sum over ranks of (recall_i - recall_{i-1}) * interpolated precision_i. A class with no ground-truth
box has no AP (NaN, left out of means).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pretrainlab.data.boxes import box_iou


@dataclass
class Boxes:
    """A flat list of boxes over a set of images.

    Args:
        image: (D,) int64 index of the image each box belongs to.
        label: (D,) int64 class id (0-based).
        boxes: (D, 4) float (x0, y0, x1, y1) in pixels.
        score: (D,) float confidence for detections; None for ground truth.
    """

    image: np.ndarray
    label: np.ndarray
    boxes: np.ndarray
    score: np.ndarray | None = None


def match_detections(detections: Boxes, truth: Boxes, class_id: int, iou_threshold: float) -> tuple[np.ndarray, int]:
    """(is true positive (D_k,) bool in ranking order, number of ground-truth boxes of the class)."""
    chosen = np.flatnonzero(detections.label == class_id)
    order = chosen[np.argsort(-detections.score[chosen], kind="stable")]
    truth_rows = np.flatnonzero(truth.label == class_id)
    taken = np.zeros(len(truth.label), dtype=bool)
    hits = np.zeros(len(order), dtype=bool)
    for rank, row in enumerate(order):
        candidates = truth_rows[(truth.image[truth_rows] == detections.image[row]) & ~taken[truth_rows]]
        if len(candidates) == 0:
            continue
        overlaps = box_iou(torch.as_tensor(detections.boxes[row : row + 1]),
                           torch.as_tensor(truth.boxes[candidates]))[0].numpy()  # (candidates,)
        best = int(np.argmax(overlaps))
        if overlaps[best] >= iou_threshold:
            taken[candidates[best]] = hits[rank] = True
    return hits, len(truth_rows)


def interpolated_ap(hits: np.ndarray, num_truth: int) -> float:
    """All-point interpolated AP of a ranking's true-positive flags (D,) against `num_truth` boxes."""
    if num_truth == 0:
        return float("nan")
    if len(hits) == 0:
        return 0.0
    true_positives = np.cumsum(hits)
    precision = true_positives / np.arange(1, len(hits) + 1)
    recall = true_positives / num_truth
    envelope = np.maximum.accumulate(precision[::-1])[::-1]  # best precision at any recall >= this one
    recall_steps = np.diff(np.concatenate([[0.0], recall]))
    return float((recall_steps * envelope).sum())


def average_precision(detections: Boxes, truth: Boxes, class_id: int, iou_threshold: float = 0.5) -> float:
    """AP of one class in [0, 1] (NaN: the class has no ground-truth box)."""
    return interpolated_ap(*match_detections(detections, truth, class_id, iou_threshold))


def average_precisions(detections: Boxes, truth: Boxes, num_classes: int, iou_threshold: float = 0.5) -> np.ndarray:
    """AP (num_classes,) of every class."""
    return np.array([average_precision(detections, truth, k, iou_threshold) for k in range(num_classes)])
