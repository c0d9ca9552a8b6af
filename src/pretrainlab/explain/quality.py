"""Attribution quality, measured: ROAD, insertion/deletion, pointing game and box IoU.

- ROAD (Rong et al., "A Consistent and Efficient Evaluation Strategy for Attribution Methods", arXiv 2202.00449),
  from pytorch-grad-cam's metrics: pixels ranked by the map are removed (replaced by noisy linear imputation from
  their neighbours, so the removal itself leaks no shape) at several percentiles; the change of the explained
  class's probability is averaged. MoRF (most relevant first) should drop the probability (more negative is
  better); LeRF (least relevant first) should keep it (closer to 0 is better); `road` = (LeRF - MoRF) / 2.
- Insertion / deletion AUC (Petsiuk et al., RISE, arXiv 1806.07421): the class probability while the most
  relevant pixels are deleted (set to the mean colour; lower area is better) or inserted into a blurred copy
  (higher area is better), over `steps` equal fractions.
- Pointing game (Zhang et al., "Top-down Neural Attention by Excitation Backprop", arXiv 1608.00507): a hit
  when the map's maximum falls on the explained class's object (within `tolerance` pixels).
- Box IoU (Zhou et al., CAM, arXiv 1512.04150): the box of the largest connected region above `threshold` x
  the map's maximum against the best-matching box of the class's objects.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from pytorch_grad_cam.metrics.road import ROADLeastRelevantFirstAverage, ROADMostRelevantFirstAverage
from scipy import ndimage

ROAD_PERCENTILES = (10, 30, 50, 70, 90)


class ProbabilityTarget:
    """pytorch-grad-cam target: the probability of one class (softmax, or sigmoid for independent labels)."""

    def __init__(self, category: int, multilabel: bool = False) -> None:
        self.category = category
        self.multilabel = multilabel

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        if self.multilabel:
            return torch.sigmoid(output[..., self.category])
        return torch.softmax(output, dim=-1)[..., self.category]


def road_scores(model: nn.Module, inputs: torch.Tensor, maps: np.ndarray, classes: np.ndarray,
                multilabel: bool = False, percentiles: tuple[int, ...] = ROAD_PERCENTILES
                ) -> tuple[np.ndarray, np.ndarray]:
    """(MoRF (N,), LeRF (N,)): mean change of the class probability over `percentiles`, via pytorch-grad-cam."""
    targets = [ProbabilityTarget(int(c), multilabel) for c in classes]
    morf = ROADMostRelevantFirstAverage(list(percentiles))(inputs, maps, targets, model)
    lerf = ROADLeastRelevantFirstAverage(list(percentiles))(inputs, maps, targets, model)
    return np.asarray(morf, dtype=np.float64).reshape(-1), np.asarray(lerf, dtype=np.float64).reshape(-1)


def class_probability(logits: torch.Tensor, cls: int, multilabel: bool) -> torch.Tensor:
    return torch.sigmoid(logits[:, cls]) if multilabel else logits.softmax(dim=1)[:, cls]


def blurred(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """(C, H, W) -> Gaussian-blurred copy (the insertion metric's starting canvas)."""
    radius = max(1, int(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=image.dtype, device=image.device)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    channels = image.shape[0]
    x = F.pad(image[None], (radius, radius, radius, radius), mode="replicate")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    x = F.conv2d(x, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)
    return x[0]


@torch.no_grad()
def insertion_deletion(model: nn.Module, inputs: torch.Tensor, maps: np.ndarray, classes: np.ndarray,
                       multilabel: bool = False, steps: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """(insertion AUC (N,), deletion AUC (N,)) of the class probability, fractions 0, 1/steps, ..., 1 (trapezoid)."""
    model.eval()
    insertion, deletion = [], []
    fractions = torch.linspace(0, 1, steps + 1, device=inputs.device)
    for image, relevance, cls in zip(inputs, maps, classes, strict=True):
        height, width = relevance.shape
        order = torch.from_numpy(np.argsort(-relevance.reshape(-1), kind="stable")).to(inputs.device)
        rank = torch.empty_like(order)
        rank[order] = torch.arange(len(order), device=inputs.device)  # pixel -> its rank, most relevant 0
        shown = (rank[None] < (fractions[:, None] * len(order)).round()).float().view(-1, 1, height, width)
        canvas = blurred(image, sigma=max(1.0, width / 16))
        inserted = image[None] * shown + canvas[None] * (1 - shown)  # (steps + 1, C, H, W)
        deleted = image[None] * (1 - shown)  # deleted pixels become 0: the mean colour in normalised units
        scores = class_probability(model(torch.cat([inserted, deleted])), int(cls), multilabel).cpu().numpy()
        insertion.append(np.trapezoid(scores[: steps + 1], dx=1 / steps))
        deletion.append(np.trapezoid(scores[steps + 1 :], dx=1 / steps))
    return np.asarray(insertion), np.asarray(deletion)


def pointing_hits(maps: np.ndarray, masks: np.ndarray, mask_ids: np.ndarray, tolerance: int = 0) -> np.ndarray:
    """(N,) bool: the maximum of maps[i] (H, W) lies within `tolerance` px of a pixel of masks[i] == mask_ids[i]."""
    hits = np.zeros(len(maps), dtype=bool)
    for index, (relevance, mask, mask_id) in enumerate(zip(maps, masks, mask_ids, strict=True)):
        row, col = np.unravel_index(int(np.argmax(relevance)), relevance.shape)
        top, left = max(0, row - tolerance), max(0, col - tolerance)
        hits[index] = bool((mask[top : row + tolerance + 1, left : col + tolerance + 1] == mask_id).any())
    return hits


def bounding_box(region: np.ndarray) -> tuple[int, int, int, int]:
    """(top, left, bottom, right), inclusive, of a non-empty boolean region (H, W)."""
    rows, cols = np.nonzero(region)
    return int(rows.min()), int(cols.min()), int(rows.max()), int(cols.max())


def box_overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """Intersection over union of two inclusive pixel boxes."""
    height = min(a[2], b[2]) - max(a[0], b[0]) + 1
    width = min(a[3], b[3]) - max(a[1], b[1]) + 1
    inter = max(0, height) * max(0, width)
    area = lambda box: (box[2] - box[0] + 1) * (box[3] - box[1] + 1)  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def object_boxes(mask: np.ndarray, mask_id: int, merge: int = 2) -> list[tuple[int, int, int, int]]:
    """Boxes of the separate objects of one class: connected regions after closing gaps of `merge` px (strokes)."""
    region = mask == mask_id
    if not region.any():
        return []
    grown = ndimage.binary_dilation(region, iterations=merge) if merge else region
    labelled, count = ndimage.label(grown, structure=np.ones((3, 3)))
    return [bounding_box(region & (labelled == index)) for index in range(1, count + 1)
            if (region & (labelled == index)).any()]


def box_ious(maps: np.ndarray, masks: np.ndarray, mask_ids: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """(N,) IoU of each map's box (largest connected region >= threshold x max) with its class's best object box."""
    ious = np.zeros(len(maps))
    for index, (relevance, mask, mask_id) in enumerate(zip(maps, masks, mask_ids, strict=True)):
        truth = object_boxes(mask, int(mask_id))
        if not truth or relevance.max() <= 0:
            continue
        labelled, count = ndimage.label(relevance >= threshold * relevance.max(), structure=np.ones((3, 3)))
        sizes = np.bincount(labelled.ravel())[1:]
        predicted = bounding_box(labelled == 1 + int(np.argmax(sizes)))
        ious[index] = max(box_overlap(predicted, box) for box in truth)
    return ious
