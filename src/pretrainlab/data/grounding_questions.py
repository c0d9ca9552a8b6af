"""SYNTHETIC grounding questions about composed canvases: a question and the region that answers it.

For answer grounding (the task of "Sentence Attention Blocks for Answer Grounding", Khoshsirat and
Kambhamettu, arXiv 2309.11593: mark the pixels that hold the evidence for a question's answer), asked
about `composed:` canvases, whose cells and masks are known (data/composed.py):
- "where is the 7?" for every class on the canvas; the answer region is every pixel of that class;
- "which digit is left of the 3?" (left of / right of / above / below) for an anchor whose class occurs
  once on the canvas and a neighbour in the same row or column; the answer region is the neighbour's
  pixels of its class inside its grid cell.
Questions are drawn with a fixed seed, at most `per_kind` of each kind per canvas. They name exactly what
the annotations know, in two fixed templates: numbers on them say what a probe can read from features,
not how it fares on people's questions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pretrainlab.data.composed import CELLS, GRID
from pretrainlab.data.source import ImageSet, ImageSource
from pretrainlab.data.synthetic_captions import with_article
from pretrainlab.errors import PretrainlabError

QUESTION_SEED = 0
WHERE = "where"
RELATION = "relation"
NO_CELL = -1


@dataclass(frozen=True)
class GroundingQuestion:
    """Args:
        image: index of the canvas in its split.
        text: the question.
        kind: WHERE or RELATION.
        mask_id: the mask value (class + 1) of the answer's pixels.
        cell: the grid cell the answer is confined to (NO_CELL: the whole canvas).
    """

    image: int
    text: str
    kind: str
    mask_id: int
    cell: int = NO_CELL


def needs_canvas_cells(source: ImageSource) -> str | None:
    """Applicability: masks and grid cells on both splits (composed canvases)."""
    for images in (source.train, source.test):
        if images is None or images.masks is None or CELLS not in images.extras:
            return (f"needs composed canvases (masks and grid cells) to ask grounding questions about, but dataset "
                    f"'{source.spec}' has none (use composed:SPEC)")
    return None


def the(name: str) -> str:
    return f"the {with_article(name).partition(' ')[2]}"


def neighbours(cell: int) -> list[tuple[int, str]]:
    """(other cell, how it lies relative to `cell`) for the cells in the same row or column."""
    row, column = divmod(cell, GRID)
    found = []
    for other in range(GRID * GRID):
        other_row, other_column = divmod(other, GRID)
        if other_row == row and other_column != column:
            found.append((other, "left of" if other_column < column else "right of"))
        elif other_column == column and other_row != row:
            found.append((other, "above" if other_row < row else "below"))
    return found


def canvas_questions(index: int, cells: np.ndarray, names: list[str], rng: np.random.Generator,
                     per_kind: int) -> list[GroundingQuestion]:
    """Questions about one canvas from its cells (GRID * GRID,) of class + 1 (0: empty)."""
    present = sorted({int(c) for c in cells if c})
    where = [GroundingQuestion(index, f"where is {the(names[c - 1])}?", WHERE, c) for c in present]
    related = []
    for anchor in np.flatnonzero(cells):
        if int((cells == cells[anchor]).sum()) != 1:
            continue  # "the 3" must name one object
        for other, how in neighbours(int(anchor)):
            if cells[other]:
                text = f"which digit is {how} {the(names[int(cells[anchor]) - 1])}?"
                related.append(GroundingQuestion(index, text, RELATION, int(cells[other]), other))
    chosen = []
    for group in (where, related):
        order = rng.permutation(len(group))[:per_kind]
        chosen.extend(group[i] for i in sorted(order))
    return chosen


def grounding_questions(images: ImageSet, names: list[str], per_kind: int = 2,
                        seed: int = QUESTION_SEED) -> list[GroundingQuestion]:
    if CELLS not in images.extras:
        raise PretrainlabError("grounding questions need composed canvases (grid cells); use composed:SPEC")
    rng = np.random.default_rng(seed)
    return [question for index, cells in enumerate(images.extras[CELLS])
            for question in canvas_questions(index, cells, names, rng, per_kind)]


def answer_masks(questions: list[GroundingQuestion], masks: np.ndarray) -> np.ndarray:
    """(Q, H, W) bool: the pixels answering each question, from the canvases' masks (N, H, W)."""
    height, width = masks.shape[1:]
    answers = np.zeros((len(questions), height, width), dtype=bool)
    for row, question in enumerate(questions):
        answer = masks[question.image] == question.mask_id
        if question.cell != NO_CELL:
            cell_row, cell_column = divmod(question.cell, GRID)
            inside = np.zeros_like(answer)
            cell_height, cell_width = height // GRID, width // GRID
            inside[cell_row * cell_height : (cell_row + 1) * cell_height,
                   cell_column * cell_width : (cell_column + 1) * cell_width] = True
            answer &= inside
        answers[row] = answer
    return answers
