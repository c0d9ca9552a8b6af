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
    """(is true positive (D_k,) bool in ranking order, number of ground-truth boxes of the class).

    A detection only competes for boxes of its own image, so the greedy matching runs image by image (in
    ranking order within the image) on one IoU matrix per image instead of one IoU call per detection.
    """
    chosen = np.flatnonzero(detections.label == class_id)
    order = chosen[np.argsort(-detections.score[chosen], kind="stable")]
    truth_rows = np.flatnonzero(truth.label == class_id)
    hits = np.zeros(len(order), dtype=bool)
    truth_of_image = _rows_by_image(truth.image[truth_rows])
    for image, ranks in _rows_by_image(detections.image[order]).items():  # ranks ascending within an image
        if image not in truth_of_image:
            continue
        own = truth_rows[truth_of_image[image]]  # the class's boxes in this image, in input order
        overlaps = box_iou(torch.as_tensor(detections.boxes[order[ranks]]),
                           torch.as_tensor(truth.boxes[own])).numpy()  # (ranks, own)
        free = np.ones(len(own), dtype=bool)
        for rank, row in zip(ranks, overlaps, strict=True):
            candidates = np.where(free, row, -np.inf)  # a taken box is out of reach
            best = int(np.argmax(candidates))
            if candidates[best] >= iou_threshold:
                free[best], hits[rank] = False, True
    return hits, len(truth_rows)


def _rows_by_image(images: np.ndarray) -> dict[int, np.ndarray]:
    """{image: positions (ascending) in `images` (D,) of that image}."""
    if len(images) == 0:
        return {}
    grouped = np.argsort(images, kind="stable")
    keys, starts = np.unique(images[grouped], return_index=True)
    return dict(zip(keys.tolist(), np.split(grouped, starts[1:]), strict=True))


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
