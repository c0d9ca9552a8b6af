"""`composed:SPEC[:N]`: a dense (and multi-label) task composed from a labelled source of centred objects.

Made for dark-background objects such as MNIST digits (`composed:builtin`) or Fashion-MNIST garments
(`composed:npz:fashion_mnist.npz`). Each canvas is twice the objects' size (56x56 for 28 px objects),
split into a 2x2 grid; 2 to 4 objects go into distinct cells, each shifted by up to 1/7 of its size.
The mask labels every object pixel brighter than `OBJECT_THRESHOLD` with the object's class + 1, the
rest 0 (background); where shifted objects overlap, the later one covers the earlier one where it is
bright. `multilabels` (N, K) records which classes each canvas shows, for the multi-label protocol.
Canvases have no single label. `extras["cells"]` (N, 4) records the class + 1 of the object in each grid
cell (row-major: top left, top right, bottom left, bottom right; 0 = empty), for generated captions.
`extras["boxes"]` (N, 4, 5) records each object's tight box around its bright pixels (data/boxes.py layout:
class + 1, x0, y0, x1, y1, exclusive ends; one row per cell, class 0 = empty), for detection.
Canvases have no single label. Every canvas ships the rule its construction guarantees (eval/consistency.py):
between 1 and 4 classes present, since 2 to 4 objects are drawn and two may share a class; the multilabel
protocol reports how often thresholded predictions break it.

N training canvases (default 2,000) are composed from the source's training images only, N/4 test
canvases from its test images only, all drawn with a fixed seed, so every backbone sees the same task
and no test object was seen in training. The spec the results carry always names N.
"""

from __future__ import annotations

import numpy as np

from pretrainlab.data.boxes import BOXES, tight_box
from pretrainlab.data.source import ImageSet, ImageSource
from pretrainlab.errors import PretrainlabError

DEFAULT_CANVASES = 2000
COMPOSE_SEED = 0
OBJECT_THRESHOLD = 32  # uint8 brightness above which a pixel belongs to its object (~12 % of full scale)
OBJECTS_PER_CANVAS = (2, 4)  # inclusive range
GRID = 2  # cells per side
CELLS = "cells"  # ImageSet.extras key: (N, GRID * GRID) uint8, class + 1 of each cell's object, 0 = empty


def parse_argument(argument: str) -> tuple[str, int]:
    """"builtin" -> ("builtin", 2000); "npz:/data/f.npz:500" -> ("npz:/data/f.npz", 500)."""
    inner, _, tail = argument.rpartition(":")
    spec, count = (inner, int(tail)) if inner and tail.isdigit() else (argument, DEFAULT_CANVASES)
    if not spec:
        raise PretrainlabError("composed needs a labelled source of objects, e.g. composed:builtin or "
                               "composed:npz:PATH[:N]")
    if count < 4:
        raise PretrainlabError(f"composed needs at least 4 training canvases (N/4 make the test split), got {count}")
    return spec, count


def paste(canvas: np.ndarray, mask: np.ndarray, image: np.ndarray, class_id: int, top: int,
          left: int) -> tuple[int, int, int, int] | None:
    """Draws `image` (h, w, C) into `canvas` (H, W, C) and its bright pixels as `class_id` into `mask` (H, W);
    returns the tight box (x0, y0, x1, y1) of those bright pixels on the canvas (None: none is bright)."""
    height, width = image.shape[:2]
    region = canvas[top : top + height, left : left + width]
    bright = image.max(axis=-1) > OBJECT_THRESHOLD  # (h, w)
    region[...] = np.where(bright[..., None], image, np.maximum(region, image))  # soft edges blend in
    mask[top : top + height, left : left + width][bright] = class_id
    return tight_box(bright, top, left)


def compose_canvases(images: np.ndarray, labels: np.ndarray, count: int, rng: np.random.Generator,
                     cells_out: np.ndarray | None = None,
                     boxes_out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`count` canvases (count, 2h, 2w, C) and masks (count, 2h, 2w) from objects (M, h, w, C) with labels (M,).

    `cells_out` (count, GRID * GRID), when given, receives the class + 1 placed in each cell (0: empty);
    `boxes_out` (count, GRID * GRID, 5) each cell's (class + 1, x0, y0, x1, y1) (data/boxes.py; 0: empty).
    """
    _, height, width, channels = images.shape
    canvases = np.zeros((count, GRID * height, GRID * width, channels), dtype=np.uint8)
    masks = np.zeros((count, GRID * height, GRID * width), dtype=np.uint8)
    max_shift = max(1, height // 7)
    for index in range(count):
        num_objects = int(rng.integers(OBJECTS_PER_CANVAS[0], OBJECTS_PER_CANVAS[1] + 1))
        cells = rng.choice(GRID * GRID, num_objects, replace=False)
        objects = rng.integers(0, len(images), num_objects)
        for cell, chosen in zip(cells, objects, strict=True):
            shift_y, shift_x = rng.integers(-max_shift, max_shift + 1, 2)
            top = int(np.clip((cell // GRID) * height + shift_y, 0, (GRID - 1) * height))
            left = int(np.clip((cell % GRID) * width + shift_x, 0, (GRID - 1) * width))
            box = paste(canvases[index], masks[index], images[chosen], int(labels[chosen]) + 1, top, left)
            if boxes_out is not None and box is not None:  # an object with no bright pixel has no box
                boxes_out[index, cell] = (int(labels[chosen]) + 1, *box)
            if cells_out is not None:
                cells_out[index, cell] = int(labels[chosen]) + 1
    return canvases, masks


def present_classes(masks: np.ndarray, num_classes: int) -> np.ndarray:
    """Multi-hot (N, num_classes): class c is present when some pixel of the mask (N, H, W) holds c + 1."""
    ids = masks.reshape(len(masks), -1).astype(np.int64)  # (N, H W), values 0..255
    counts = np.bincount((ids + 256 * np.arange(len(masks))[:, None]).ravel(), minlength=256 * len(masks))
    return (counts.reshape(len(masks), 256)[:, 1 : num_classes + 1] > 0).astype(np.uint8)  # one pass for all masks


def canvas_rules(num_classes: int) -> str:
    """The rule file (YAML) every composed canvas satisfies by construction: the count of objects it holds.

    Stored as `ImageSource.extra["rules"]` (eval/consistency.py's RULES_KEY), where the multilabel protocol finds it.
    """
    low, high = OBJECTS_PER_CANVAS
    return (f"# composed canvases hold {low}-{high} objects in distinct cells; objects may share a class\n"
            f"rules:\n  - at_least: 1\n  - at_most: {min(high, num_classes)}\n")


def compose_source(objects: ImageSource, count: int) -> ImageSource:
    """`count` training and count // 4 test canvases from a labelled source with train and test splits."""
    objects.require_labels(f"composed:{objects.spec}")
    num_classes = objects.num_classes
    names = objects.classes or [str(index) for index in range(num_classes)]
    rng = np.random.default_rng(COMPOSE_SEED)
    splits = []
    for images, canvases in ((objects.train, count), (objects.test, max(1, count // 4))):
        cells = np.zeros((canvases, GRID * GRID), dtype=np.uint8)
        boxes = np.zeros((canvases, GRID * GRID, 5), dtype=np.int16)
        composed, masks = compose_canvases(images.images, images.labels, canvases, rng, cells, boxes)
        splits.append(ImageSet(composed, masks=masks, multilabels=present_classes(masks, num_classes),
                               extras={CELLS: cells, BOXES: boxes}))
    return ImageSource(f"composed:{objects.spec}:{count}", splits[0], splits[1], classes=list(names),
                       split_note=f"canvases from the objects' own train/test split ({objects.split_note}), "
                                  f"seed {COMPOSE_SEED}",
                       mask_classes=["background", *names], extra={"rules": canvas_rules(num_classes)})


def load_composed(argument: str, **_: object) -> ImageSource:
    from pretrainlab.data.spec import load_source  # spec.py registers this loader: import at call time

    spec, count = parse_argument(argument)
    return compose_source(load_source(spec), count)
