"""A small CenterNet-style open-vocabulary detection head on a frozen feature map.

Zhou et al., "Objects as Points", arXiv 1904.07850: an object is the peak of a centre heatmap, with its
box size and the sub-cell offset of its centre regressed at that peak. Here the heatmap is one
class-agnostic objectness map, and the class comes from an embedding per location scored by cosine
similarity against the text embeddings of class names (as open-vocabulary detectors such as ViLD,
arXiv 2104.13921, replace the classifier with text embeddings), so classes never trained on can be
named at test time.

Targets at map resolution (h, w): a box's centre c = ((x0 + x1) / 2, (y0 + y1) / 2) / stride falls in cell
floor(c) with offset c - floor(c); its size is (x1 - x0, y1 - y0) / stride; the heatmap is the maximum over
objects of Gaussians exp(-d^2 / 2 sigma^2) around the centre cells, sigma = max(0.5, sqrt(w h) / 6) in cells
(a simpler rule than the paper's overlap-derived radius), 1 exactly at centre cells. Losses as the paper:
penalty-reduced focal loss (alpha 2, beta 4) on the heatmap, L1 on size (weight 0.1) and offset (weight 1) at
the centre cells, plus cross-entropy of the centre's embedding over the seen classes' text embeddings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

SIZE_WEIGHT, OFFSET_WEIGHT = 0.1, 1.0
FOCAL_ALPHA, FOCAL_BETA = 2.0, 4.0


class CenterNetHead(nn.Module):
    """Standardised maps (B, C, h, w) -> heatmap logits (B, h, w), size (B, 2, h, w), offset (B, 2, h, w) and
    L2-normalised embeddings (B, E, h, w); `logit_scale` (learned) scales their cosine with text embeddings."""

    def __init__(self, channels: int, embed_dim: int, hidden: int = 64) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(channels, hidden, 3, padding=1), nn.ReLU(inplace=True))
        self.heat = nn.Conv2d(hidden, 1, 1)
        nn.init.constant_(self.heat.bias, -2.19)  # the paper's prior: sigmoid(-2.19) = 0.1 objectness everywhere
        self.size = nn.Conv2d(hidden, 2, 1)
        self.offset = nn.Conv2d(hidden, 2, 1)
        self.embed = nn.Conv2d(hidden, embed_dim, 1)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(10.0)))

    def forward(self, maps: torch.Tensor) -> dict[str, torch.Tensor]:
        hidden = self.stem(maps)  # (B, hidden, h, w)
        return {"heat": self.heat(hidden)[:, 0], "size": self.size(hidden), "offset": self.offset(hidden),
                "embed": F.normalize(self.embed(hidden), dim=1)}


@dataclass
class Targets:
    """Training targets of N images with up to M objects each, at map resolution (h, w).

    Args:
        heat: (N, h, w) Gaussian centre heatmap of the annotated objects.
        cell: (N, M) int64 flat index y * w + x of each object's centre cell.
        size: (N, M, 2) box width and height in cells; offset: (N, M, 2) centre minus its cell, in [0, 1).
        label: (N, M) int64 index into the trained classes; valid: (N, M) bool, False on padding.
    """

    heat: torch.Tensor
    cell: torch.Tensor
    size: torch.Tensor
    offset: torch.Tensor
    label: torch.Tensor
    valid: torch.Tensor

    def to(self, device: torch.device) -> Targets:
        return Targets(*(getattr(self, name).to(device) for name in self.__dataclass_fields__))


def build_targets(boxes: np.ndarray, labels: np.ndarray, map_size: tuple[int, int],
                  stride: tuple[float, float]) -> Targets:
    """Targets from boxes (N, M, 4) in pixels and labels (N, M) (index into the trained classes, -1: not annotated)."""
    height, width = map_size
    count = len(labels)
    centres = np.stack([(boxes[..., 0] + boxes[..., 2]) / 2 / stride[0],
                        (boxes[..., 1] + boxes[..., 3]) / 2 / stride[1]], axis=-1)  # (N, M, 2) (x, y) in cells
    cells = np.clip(np.floor(centres), 0, [width - 1, height - 1])
    sizes = np.stack([(boxes[..., 2] - boxes[..., 0]) / stride[0], (boxes[..., 3] - boxes[..., 1]) / stride[1]], -1)
    valid = labels >= 0
    heat = np.zeros((count, height, width), dtype=np.float32)
    ys, xs = np.mgrid[0:height, 0:width]
    for image, slot in zip(*np.nonzero(valid), strict=True):
        cx, cy = cells[image, slot]
        sigma = max(0.5, math.sqrt(max(sizes[image, slot].prod(), 0.0)) / 6)
        gaussian = np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma**2))
        heat[image] = np.maximum(heat[image], gaussian)
    return Targets(torch.from_numpy(heat), torch.from_numpy((cells[..., 1] * width + cells[..., 0]).astype(np.int64)),
                   torch.from_numpy(sizes.astype(np.float32)),
                   torch.from_numpy((centres - cells).astype(np.float32)),
                   torch.from_numpy(np.maximum(labels, 0).astype(np.int64)), torch.from_numpy(valid))


def focal_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss of heatmap logits (B, h, w) against a Gaussian target (B, h, w)."""
    probability = logits.sigmoid().clamp(1e-4, 1 - 1e-4)
    positive = target >= 1
    positive_loss = -((1 - probability) ** FOCAL_ALPHA) * probability.log() * positive
    negative_loss = -((1 - target) ** FOCAL_BETA) * probability**FOCAL_ALPHA * (1 - probability).log() * ~positive
    return (positive_loss.sum() + negative_loss.sum()) / positive.sum().clamp(min=1)


def at_cells(values: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
    """Values (B, K, h, w) at flat cells (B, M) -> (B, M, K)."""
    flat = values.flatten(2)  # (B, K, h w)
    return flat.gather(2, cells[:, None, :].expand(-1, flat.shape[1], -1)).transpose(1, 2)


def detection_loss(outputs: dict[str, torch.Tensor], targets: Targets, texts: torch.Tensor,
                   logit_scale: torch.Tensor) -> torch.Tensor:
    """The summed CenterNet losses of one batch; texts (K_trained, E) normalised class embeddings."""
    valid = targets.valid
    count = valid.sum().clamp(min=1)
    size_loss = ((at_cells(outputs["size"], targets.cell) - targets.size).abs().sum(-1) * valid).sum() / count
    offset_loss = ((at_cells(outputs["offset"], targets.cell) - targets.offset).abs().sum(-1) * valid).sum() / count
    embeddings = at_cells(outputs["embed"], targets.cell)[valid]  # (O, E)
    logits = logit_scale.exp() * embeddings @ texts.T  # (O, K_trained)
    class_loss = F.cross_entropy(logits, targets.label[valid]) if len(embeddings) else logits.sum() * 0
    return (focal_loss(outputs["heat"], targets.heat) + SIZE_WEIGHT * size_loss + OFFSET_WEIGHT * offset_loss
            + class_loss)


def decode_peaks(outputs: dict[str, torch.Tensor], peaks: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The `peaks` strongest local maxima (3x3) of each heatmap: objectness (B, P), boxes (B, P, 4) in cells
    (x0, y0, x1, y1), and the embeddings there (B, P, E)."""
    probability = outputs["heat"].sigmoid()  # (B, h, w)
    is_peak = probability == F.max_pool2d(probability[:, None], 3, stride=1, padding=1)[:, 0]
    flat = (probability * is_peak).flatten(1)  # (B, h w)
    objectness, cells = flat.topk(min(peaks, flat.shape[1]), dim=1)  # (B, P)
    width = probability.shape[2]
    centre = torch.stack([cells % width, cells // width], -1).float() + at_cells(outputs["offset"], cells)
    half = at_cells(outputs["size"], cells).clamp(min=0) / 2  # (B, P, 2)
    return objectness, torch.cat([centre - half, centre + half], -1), at_cells(outputs["embed"], cells)
