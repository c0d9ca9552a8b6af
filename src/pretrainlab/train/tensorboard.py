"""TensorBoard event files beside metrics.jsonl, so `tensorboard --logdir runs/` shows runs as people expect.

metrics.jsonl stays the source of truth (reports, the store); the event files are a view of the same
scalars (loss terms, learning rate, images/s, monitors) plus the reconstructions as an image.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

TENSORBOARD_FOLDER = "tensorboard"
NOT_CURVES = {"step", "epoch"}


class TensorBoardLog:
    """Writes RUN/tensorboard/events.*; `purge_step` drops events a resumed run is about to write again."""

    def __init__(self, run_dir: Path, purge_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter  # imported only when asked for: it loads tensorboard

        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / TENSORBOARD_FOLDER), purge_step=purge_step or None)

    def scalars(self, record: dict[str, Any], step: int, group: str = "train") -> None:
        """Every finite number of a metrics record as `GROUP/KEY` at `step`."""
        for key, value in record.items():
            if key in NOT_CURVES or isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if math.isfinite(value):
                self.writer.add_scalar(f"{group}/{key}", value, step)

    def image(self, tag: str, path: Path, step: int) -> None:
        """A PNG file (e.g. the reconstructions grid) as an image event."""
        array = np.asarray(Image.open(path).convert("RGB"))  # (H, W, 3) uint8
        self.writer.add_image(tag, array, step, dataformats="HWC")

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()
