"""Synthetic annotation noise on segmentation masks, fixed by a seed, for studying noisy dense labels.

The noise types of ADELE's medical-imaging study (Liu et al., "Adaptive Early-Learning Correction for
Segmentation from Noisy Annotations", arXiv 2110.03740, section 5: masks randomly dilated or eroded to mimic
annotators' errors) plus two for multi-class masks. A spec is one or more `KIND:LEVEL` joined by "+", applied
in that order (e.g. `dilate:2+flip:0.2`):
- `dilate:R`  every object grows by R pixels (a (2R+1)-square), over background pixels only;
- `erode:R`   every object shrinks by R pixels; the removed pixels become background;
- `flip:P`    every object (a connected component of one class, 8-neighbourhood) changes, with probability P,
              to another object class drawn uniformly;
- `polygon:N` N random star-shaped polygons (3 to 6 vertices, up to half the image wide) per mask, each
              filled with a random object class, as spurious annotations.
Background is class 0 and the ignore id 255 is never changed or drawn; the masks' object classes are 1..K-1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from pretrainlab.errors import PretrainlabError

BACKGROUND, IGNORE = 0, 255
KINDS = {"dilate": "pixels (an integer >= 1)", "erode": "pixels (an integer >= 1)",
         "flip": "a probability in (0, 1]", "polygon": "polygons per mask (an integer >= 1)"}
EIGHT_NEIGHBOURS = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class MaskNoise:
    """One noise step: `kind` (a key of KINDS) at `level`."""

    kind: str
    level: float


def parse_mask_noise(spec: str) -> list[MaskNoise]:
    """"dilate:2+flip:0.3" -> [MaskNoise("dilate", 2), MaskNoise("flip", 0.3)], with a one-line error otherwise."""
    usage = "; valid: KIND:LEVEL joined by '+', KIND one of " + ", ".join(f"{k} ({v})" for k, v in KINDS.items())
    steps = []
    for part in str(spec).split("+"):
        kind, _, text = part.strip().partition(":")
        if kind not in KINDS:
            raise PretrainlabError(f"mask_noise: unknown kind {kind!r} in {spec!r}{usage}")
        try:
            level = float(text)
        except ValueError:
            raise PretrainlabError(f"mask_noise: {part!r} needs a number after ':'{usage}") from None
        integer = kind != "flip"
        if (integer and (level < 1 or level != int(level))) or (not integer and not 0 < level <= 1):
            raise PretrainlabError(f"mask_noise: {kind} takes {KINDS[kind]}, got {text!r}")
        steps.append(MaskNoise(kind, level))
    return steps


def apply_mask_noise(masks: np.ndarray, steps: list[MaskNoise], num_classes: int, seed: int) -> np.ndarray:
    """masks (N, H, W) uint8 -> a noisy copy (N, H, W) uint8; the same masks, steps and seed give the same copy."""
    rng = np.random.default_rng(seed)
    noisy = masks.copy()
    for index in range(len(noisy)):
        for step in steps:
            noisy[index] = NOISE[step.kind](noisy[index], step.level, num_classes, rng)
    return noisy


def object_classes(mask: np.ndarray) -> list[int]:
    return [int(c) for c in np.unique(mask) if c not in (BACKGROUND, IGNORE)]


def dilate(mask: np.ndarray, radius: float, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    out = mask.copy()
    square = np.ones((2 * int(radius) + 1,) * 2, dtype=bool)
    for c in object_classes(mask):  # classes in id order; a grown object never covers another object
        grown = ndimage.binary_dilation(mask == c, structure=square)
        out[grown & (out == BACKGROUND)] = c
    return out


def erode(mask: np.ndarray, radius: float, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    out = mask.copy()
    square = np.ones((2 * int(radius) + 1,) * 2, dtype=bool)
    for c in object_classes(mask):
        region = mask == c
        out[region & ~ndimage.binary_erosion(region, structure=square)] = BACKGROUND
    return out


def flip(mask: np.ndarray, probability: float, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    out = mask.copy()
    if num_classes < 3:  # one object class: nothing to flip to
        return out
    for c in object_classes(mask):
        components, count = ndimage.label(mask == c, structure=EIGHT_NEIGHBOURS)
        for component in range(1, count + 1):
            if rng.random() < probability:
                others = [k for k in range(1, num_classes) if k != c]
                out[components == component] = others[int(rng.integers(len(others)))]
    return out


def polygon(mask: np.ndarray, count: float, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    height, width = mask.shape
    out = mask.copy()
    for _ in range(int(count)):
        vertices = int(rng.integers(3, 7))
        centre = rng.uniform((0, 0), (width, height))
        half = rng.uniform(0.1, 0.25) * min(width, height)  # up to half the image across
        angles = np.sort(rng.uniform(0, 2 * np.pi, vertices))  # vertices in angle order: a simple (star) polygon
        radii = rng.uniform(0.3, 1.0, vertices) * half
        points = centre + radii[:, None] * np.stack([np.cos(angles), np.sin(angles)], axis=1)  # (V, 2) x, y
        layer = Image.new("L", (width, height), 0)
        ImageDraw.Draw(layer).polygon([tuple(p) for p in points], fill=1)
        inside = (np.asarray(layer) > 0) & (out != IGNORE)
        out[inside] = int(rng.integers(1, max(2, num_classes)))
    return out


NOISE = {"dilate": dilate, "erode": erode, "flip": flip, "polygon": polygon}
