"""PNG grids of attacked images: rows of images with a label per row and a caption per image.

Perturbations are shown magnified ten times around mid-grey (0.5 + 10 * delta), so an L-inf budget of
8/255 becomes a visible +-0.31 swing; a caption in red marks a prediction that differs from the truth.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from pretrainlab.atomic import atomic_path

log = logging.getLogger(__name__)

MAGNIFY = 10.0


@dataclass
class ImageRow:
    """Args:
        label: shown left of the row.
        images: (K, C, H, W) in [0, 1], C = 1 or 3.
        captions: one short text per image (e.g. "pred 3"), or None.
        wrong: (K,) bool, captions drawn in red where True.
    """

    label: str
    images: torch.Tensor
    captions: list[str] | None = None
    wrong: torch.Tensor | None = None


def magnified(perturbation: torch.Tensor, factor: float = MAGNIFY) -> torch.Tensor:
    """A perturbation (K, C, H, W) shown as 0.5 + factor * delta, clipped to [0, 1]."""
    return (0.5 + factor * perturbation).clamp(0.0, 1.0)


def attack_rows(clean: torch.Tensor, adversarial: torch.Tensor, labels: torch.Tensor, clean_predictions: torch.Tensor,
                adversarial_predictions: torch.Tensor, name: str) -> list[ImageRow]:
    """Three rows for one budget: (clean), adversarial, perturbation x10; captions are the predictions."""
    return [ImageRow("clean", clean, [f"pred {int(p)}" for p in clean_predictions], clean_predictions != labels),
            ImageRow(name, adversarial, [f"pred {int(p)}" for p in adversarial_predictions],
                     adversarial_predictions != labels),
            ImageRow(f"perturbation x{MAGNIFY:g}", magnified(adversarial - clean))]


def save_rows(path: Path, rows: list[ImageRow], title: str = "", cell_inches: float = 0.8) -> Path:
    """Writes the rows as one PNG (atomically) and returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = max(len(row.images) for row in rows)
    size = (cell_inches * columns + 1.4, cell_inches * len(rows) + 0.5)
    figure, axes = plt.subplots(len(rows), columns, figsize=size, squeeze=False)
    for row_index, row in enumerate(rows):
        for column in range(columns):
            axis = axes[row_index][column]
            axis.set_xticks([])
            axis.set_yticks([])
            for spine in axis.spines.values():
                spine.set_visible(False)
            if column >= len(row.images):
                continue
            image = row.images[column].detach().float().cpu().clamp(0, 1)
            if image.shape[0] == 1:
                axis.imshow(image[0].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            else:
                axis.imshow(image.permute(1, 2, 0).numpy(), interpolation="nearest")
            if row.captions is not None:
                colour = "red" if row.wrong is not None and bool(row.wrong[column]) else "black"
                axis.set_title(row.captions[column], fontsize=6, color=colour, pad=1.5)
        axes[row_index][0].set_ylabel(row.label, fontsize=7, rotation=0, ha="right", va="center")
    if title:
        figure.suptitle(title, fontsize=8)
    figure.tight_layout(pad=0.3, rect=(0, 0, 1, 0.96 if title else 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110)
    plt.close(figure)
    log.info("figure written to %s", path)
    return path
