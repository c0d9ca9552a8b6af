"""Attention patterns of a vision transformer, per layer and head (the analysis of UNIP, arXiv 2502.02257).

For every block: the attention maps (probabilities computed explicitly, backbones/attention_maps.py), the mean
attention distance and the NMI between query and key positions, per head, averaged over images; and each layer
classified from its head-averaged NMI:
- local: NMI >= `local_nmi` (each query attends to its own neighbourhood, a different one per query);
- global: NMI < `global_nmi` (all queries attend to the same keys, or uniformly);
- hybrid: in between (nearby tokens and shared foreground tokens together; UNIP finds this pattern matters most
  for segmentation and distils it).
The thresholds are this project's (0.30 and 0.10 by default; on the 7x7-8x8 grids of small images a Gaussian
neighbourhood of one patch gives NMI ~0.33 and any query-independent pattern gives 0); UNIP reads the classes off
its figures. They are options.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pretrainlab.backbones import Backbone
from pretrainlab.backbones.attention_maps import attention_maps, attention_nmi, mean_attention_distance, patch_attention

LOCAL_NMI = 0.30
GLOBAL_NMI = 0.10
LAYER_CLASSES = ("local", "hybrid", "global")


@dataclass
class AttentionPatterns:
    """distance (layers, heads) px, nmi (layers, heads), classes (layers,), example (layers, heads, N, N) patch
    attention of the first image, grid (rows, cols)."""

    distance: np.ndarray
    nmi: np.ndarray
    classes: list[str]
    example: np.ndarray
    grid: tuple[int, int]
    cls_attention: np.ndarray | None  # (layers, heads, N) attention of the class token to the patches


def classify_layer(nmi: float, local_nmi: float = LOCAL_NMI, global_nmi: float = GLOBAL_NMI) -> str:
    if nmi >= local_nmi:
        return "local"
    return "global" if nmi < global_nmi else "hybrid"


@torch.no_grad()
def attention_patterns(backbone: Backbone, batches: list[torch.Tensor], local_nmi: float = LOCAL_NMI,
                       global_nmi: float = GLOBAL_NMI) -> AttentionPatterns:
    """Statistics over every image of `batches` (each (B, C, H, W), normalised)."""
    vit, prefix = backbone.model, backbone.num_prefix_tokens
    distance_sum = nmi_sum = None
    images = 0
    example = cls_attention = grid = None
    for x in batches:
        maps, grid = attention_maps(vit, x)
        patches = [patch_attention(m, prefix) for m in maps]  # each (B, heads, N, N)
        distance = torch.stack([mean_attention_distance(p, grid, backbone.patch_size).sum(0) for p in patches])
        nmi = torch.stack([attention_nmi(p).sum(0) for p in patches])  # (layers, heads)
        distance_sum = distance if distance_sum is None else distance_sum + distance
        nmi_sum = nmi if nmi_sum is None else nmi_sum + nmi
        images += len(x)
        if example is None:
            example = torch.stack([p[0] for p in patches]).float().numpy()
            if prefix:
                cls_attention = torch.stack([m[0, :, 0, prefix:] for m in maps]).float().numpy()
    nmi_mean = (nmi_sum / images).float().numpy()
    classes = [classify_layer(float(value), local_nmi, global_nmi) for value in nmi_mean.mean(axis=1)]
    return AttentionPatterns((distance_sum / images).float().numpy(), nmi_mean, classes, example, tuple(grid),
                             cls_attention)
