"""SYNTHETIC captions for sources that have none, so image-text methods can be run and tested offline.

These captions are generated from annotations, not written by people: they name exactly what the
annotations know and nothing else, in a small fixed grammar. Numbers measured on them say what a
method learns from such text, not how it would fare on real captions.

- `composed:` canvases (2x2 grid, data/composed.py): three captions per canvas, from the class placed
  in each cell: where each object is ("a 3 at the top left and a 7 at the bottom left"), relations
  between objects ("a 3 above a 7, a 1 on the right"), and an inventory ("two objects: a 3 and a 7").
  Object order and the relation anchor are drawn with a fixed seed.
- labelled sources: every image gets the class name in each of `LABEL_TEMPLATES` ("a photo of a 3.").
  Images of a class share their captions, so text carries the label and nothing more.
"""

from __future__ import annotations

import numpy as np

from pretrainlab.data.captions import with_captions
from pretrainlab.data.composed import CELLS, GRID
from pretrainlab.data.source import ImageSet, ImageSource
from pretrainlab.errors import PretrainlabError

CAPTION_SEED = 0
LABEL_TEMPLATES = ("a photo of {}.", "an image of {}.", "a picture showing {}.", "{}.")
POSITIONS = ("top left", "top right", "bottom left", "bottom right")  # cell index, row-major in the 2x2 grid
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def with_article(name: str) -> str:
    """'3' -> 'a 3', '8' -> 'an 8', 'Ankle boot' -> 'an ankle boot' (names lower-cased, digits kept)."""
    noun = name.strip().lower()
    article = "an" if noun[:1] in "aeiou8" or noun in ("11", "18") else "a"
    return f"{article} {noun}"


def join_words(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} and {parts[-1]}"


def relation(first: int, second: int) -> str:
    """How cell `first` lies relative to cell `second` in the 2x2 grid."""
    (row_a, col_a), (row_b, col_b) = divmod(first, GRID), divmod(second, GRID)
    vertical = "above" if row_a < row_b else "below" if row_a > row_b else ""
    horizontal = "left of" if col_a < col_b else "right of" if col_a > col_b else ""
    return f"{vertical} and {horizontal}" if vertical and horizontal else vertical or horizontal


def side(cell: int) -> str:
    """'on the left' / 'on the right': a cell's column, for objects named after the related pair."""
    return "on the left" if cell % GRID == 0 else "on the right"


def canvas_captions(cells: np.ndarray, names: list[str], rng: np.random.Generator) -> list[str]:
    """Three captions of one canvas from its cells (GRID * GRID,) of class + 1 (0: empty)."""
    occupied = [int(cell) for cell in np.flatnonzero(cells)]
    objects = {cell: with_article(names[int(cells[cell]) - 1]) for cell in occupied}
    where = join_words([f"{objects[cell]} at the {POSITIONS[cell]}" for cell in occupied])
    order = [occupied[i] for i in rng.permutation(len(occupied))]
    related = f"{objects[order[0]]} {relation(order[0], order[1])} {objects[order[1]]}"
    rest = [f"{objects[cell]} {side(cell)}" for cell in order[2:]]
    inventory = f"{NUMBER_WORDS[len(occupied)]} objects: {join_words([objects[cell] for cell in order])}"
    return [where, ", ".join([related, *rest]), inventory]


def composed_captions(images: ImageSet, names: list[str], rng: np.random.Generator) -> list[list[str]]:
    return [canvas_captions(cells, names, rng) for cells in images.extras[CELLS]]


def label_captions(images: ImageSet, names: list[str]) -> list[list[str]]:
    per_class = [[template.format(with_article(name)) for template in LABEL_TEMPLATES] for name in names]
    return [per_class[int(label)] for label in images.labels]


def caption_source(source: ImageSource) -> ImageSource:
    """`source` with synthetic captions on both splits; its spec becomes `captions:SPEC`."""
    if source.train.labels is None and CELLS not in source.train.extras:
        raise PretrainlabError(f"captions:{source.spec}: synthetic captions need a labelled source or composed "
                               "canvases; for other images give a caption file (captions:PATH.csv or .jsonl)")
    names = source.classes or [str(index) for index in range(source.num_classes)]
    rng = np.random.default_rng(CAPTION_SEED)
    splits = []
    for images in (source.train, source.test):
        if images is None:
            splits.append(None)
        elif CELLS in images.extras:
            splits.append(with_captions(images, composed_captions(images, names, rng)))
        else:
            splits.append(with_captions(images, label_captions(images, names)))
    kind = "composed-canvas relations" if CELLS in source.train.extras else "class-name templates"
    captioned = ImageSource(f"captions:{source.spec}", splits[0], splits[1], classes=source.classes,
                            skipped_files=source.skipped_files, split_note=source.split_note,
                            extra=dict(source.extra), mask_classes=source.mask_classes)
    captioned.extra["synthetic_captions"] = kind
    return captioned
