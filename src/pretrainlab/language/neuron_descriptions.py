"""Neuron descriptions: each channel of a layer named by the word with the highest pointwise mutual
information with the image regions where the channel is active (after MILAN).

Hernandez et al., "Natural Language Descriptions of Deep Visual Features", arXiv 2201.11114 (MILAN):
a neuron is described by the description d maximising log p(d | E) - log p(d), E being its exemplar
regions (where it is most active). MILAN learns p(d | E) with a captioner trained on human annotations;
here, offline, the candidate descriptions are the object words of the caption vocabulary (the class names
that the synthetic captions use, "a 3") and p(d | E) is read off the known object masks of composed
canvases: the share of the neuron's active region covered by objects of class d. p(d) is the share of
all regions covered by d. The active region is network dissection's: feature-map cells above the
channel's `quantile` over all images (Bau et al., arXiv 1704.05796); the masks are averaged down to the
feature map's cells, so a cell holds the fraction of its pixels on each class.

Agreement against the known objects, on held-out canvases: the IoU between each channel's active region
(with its training threshold) and the mask of the class it was described by; the chance level is the
mean IoU of the same regions with every class (a description drawn at random).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

EPSILON = 1e-12


@dataclass
class NeuronDescription:
    """Args:
        channel: index in the layer.
        description: the candidate with the highest PMI.
        pmi: its PMI, log p(d | active) - log p(d) (natural log).
        coverage: p(d | active), the share of the active region on objects d.
        agreement: held-out IoU of the active region with d's mask (None before `agreement` is measured).
    """

    channel: int
    description: str
    pmi: float
    coverage: float
    agreement: float | None = None


def class_fractions(masks: torch.Tensor, num_classes: int, size: tuple[int, int]) -> torch.Tensor:
    """masks (N, H, W) of ids (0 background, c + 1 class c, 255 ignore) -> (N, K, h, w): each cell's share of
    pixels on each class."""
    ids = masks.long()
    one_hot = torch.stack([(ids == c + 1).float() for c in range(num_classes)], dim=1)  # (N, K, H, W)
    return F.adaptive_avg_pool2d(one_hot, size)


def thresholds(maps: torch.Tensor, quantile: float) -> torch.Tensor:
    """(C,) the `quantile` of each channel's activations over all images and cells of maps (N, C, h, w)."""
    flat = maps.transpose(0, 1).reshape(maps.shape[1], -1).float()  # (C, N h w)
    sample = flat[:, torch.linspace(0, flat.shape[1] - 1, min(flat.shape[1], 200_000)).long()]
    return torch.quantile(sample, quantile, dim=1)


def region_class_overlap(maps: torch.Tensor, cutoffs: torch.Tensor, fractions: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(overlap (C, K) = active cells' class mass, active (C,) = active cell count, class mass (K,))."""
    active = (maps > cutoffs.view(1, -1, 1, 1)).float()  # (N, C, h, w)
    overlap = torch.einsum("nchw,nkhw->ck", active, fractions)
    return overlap, active.sum(dim=(0, 2, 3)), fractions.sum(dim=(0, 2, 3))


def describe_neurons(maps: torch.Tensor, masks: torch.Tensor, names: list[str], quantile: float = 0.99
                     ) -> tuple[list[NeuronDescription], torch.Tensor]:
    """Describes every channel of maps (N, C, h, w) on images with masks (N, H, W); returns (descriptions, cutoffs)."""
    cutoffs = thresholds(maps, quantile)
    fractions = class_fractions(masks, len(names), maps.shape[-2:])  # (N, K, h, w)
    overlap, active, mass = region_class_overlap(maps, cutoffs, fractions)
    cells = fractions.shape[0] * fractions.shape[2] * fractions.shape[3]
    conditional = overlap / active.clamp(min=1).unsqueeze(1)  # p(d | active) (C, K)
    prior = mass / cells  # p(d) (K,)
    pmi = torch.log(conditional + EPSILON) - torch.log(prior + EPSILON)  # (C, K)
    best = pmi.argmax(dim=1)
    return [NeuronDescription(c, names[int(best[c])], float(pmi[c, best[c]]), float(conditional[c, best[c]]))
            for c in range(maps.shape[1])], cutoffs


def agreement(descriptions: list[NeuronDescription], maps: torch.Tensor, masks: torch.Tensor, names: list[str],
              cutoffs: torch.Tensor) -> tuple[float, float]:
    """Held-out (mean IoU with the described class, mean IoU with a random class), both in percent; fills
    each description's `agreement`."""
    fractions = class_fractions(masks, len(names), maps.shape[-2:])
    overlap, active, mass = region_class_overlap(maps, cutoffs, fractions)
    iou = overlap / (active.unsqueeze(1) + mass.unsqueeze(0) - overlap).clamp(min=EPSILON)  # (C, K)
    index = {name: k for k, name in enumerate(names)}
    chosen = torch.tensor([index[d.description] for d in descriptions])
    described = iou[torch.arange(len(descriptions)), chosen]
    for entry, value in zip(descriptions, described.tolist(), strict=True):
        entry.agreement = value * 100
    return float(described.mean()) * 100, float(iou.mean()) * 100
