"""Object boxes that travel with images: `ImageSet.extras["boxes"]`, one padded row per object.

Layout: (N, M, 5) int16 per split, each row (class + 1, x0, y0, x1, y1) in pixels of the stored image,
x1 and y1 exclusive (an object covering columns 3..9 has x0 = 3, x1 = 10, width 7); rows of class 0 pad
images with fewer than M objects. `composed:` canvases record every object's box this way (data/composed.py);
detection protocols and region-level pre-training (methods/dito.py) read them. Validated here once, so a box
outside its image or a class without a name is a one-line error before any training.
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision.ops import box_iou as torchvision_box_iou

from pretrainlab.data.source import ImageSet, ImageSource
from pretrainlab.errors import PretrainlabError

BOXES = "boxes"  # ImageSet.extras key


def tight_box(bright: np.ndarray, top: int, left: int) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1), exclusive ends, of the True pixels of `bright` (h, w) placed at (top, left); None if empty."""
    rows, cols = np.flatnonzero(bright.any(axis=1)), np.flatnonzero(bright.any(axis=0))
    if len(rows) == 0:
        return None
    return left + int(cols[0]), top + int(rows[0]), left + int(cols[-1]) + 1, top + int(rows[-1]) + 1


def has_boxes(source: ImageSource) -> bool:
    return BOXES in source.train.extras and source.test is not None and BOXES in source.test.extras


def check_boxes(images: ImageSet, num_classes: int, where: str) -> np.ndarray:
    """The split's boxes (N, M, 5) int64, checked: inside the image, non-empty, classes 1..num_classes."""
    boxes = np.asarray(images.extras[BOXES])
    if boxes.ndim != 3 or boxes.shape[-1] != 5 or boxes.dtype.kind not in "iu":
        raise PretrainlabError(f"{where}: boxes must be an integer array (N, M, 5) of (class + 1, x0, y0, x1, y1), "
                               f"got {boxes.dtype} {boxes.shape}")
    boxes = boxes.astype(np.int64)
    height, width = images.images.shape[1:3]
    real = boxes[..., 0] != 0
    for problem, bad in (
        (f"a class id outside 1..{num_classes} (class + 1; 0 pads)",
         real & ((boxes[..., 0] < 0) | (boxes[..., 0] > num_classes))),
        (f"a box outside the {width}x{height} image (valid: 0 <= x0 < x1 <= {width}, 0 <= y0 < y1 <= {height})",
         real & ((boxes[..., 1] < 0) | (boxes[..., 2] < 0) | (boxes[..., 3] > width) | (boxes[..., 4] > height)
                 | (boxes[..., 3] <= boxes[..., 1]) | (boxes[..., 4] <= boxes[..., 2]))),
    ):
        if bad.any():
            image, row = (int(v) for v in np.argwhere(bad)[0])
            raise PretrainlabError(f"{where}: image {image} has {problem}: {boxes[image, row].tolist()} "
                                   f"({int(bad.sum())} such boxes)")
    if len(boxes) and not real.any():
        raise PretrainlabError(f"{where}: the split holds no object boxes")
    return boxes


def box_iou(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Intersection over union (N, M) of boxes (N, 4) and (M, 4) given as (x0, y0, x1, y1), continuous
    coordinates (area = (x1 - x0) (y1 - y0)); torchvision's implementation."""
    return torchvision_box_iou(first.double(), second.double())
