"""RISE: Randomized Input Sampling for Explanation (Petsiuk, Das and Saenko, arXiv 1806.07421).

Captum has no RISE, so it is written here, batched. Draw `num_masks` binary grids of `cells` x `cells`
with keep probability p, upsample each bilinearly to (cells + 1) / cells of the image and crop at a random
shift (smooth masks that are not aligned to a grid); the saliency of class c at a pixel is
sum_i f_c(x * M_i) M_i(pixel) / (num_masks p), the expected class score when that pixel is kept.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def rise_masks(num_masks: int, height: int, width: int, cells: int, keep: float,
               generator: torch.Generator) -> torch.Tensor:
    """(num_masks, 1, H, W) smooth masks in [0, 1] (the paper's construction)."""
    grid = (torch.rand(num_masks, 1, cells, cells, generator=generator) < keep).float()
    cell_h, cell_w = -(-height // cells), -(-width // cells)  # ceil
    up = F.interpolate(grid, size=((cells + 1) * cell_h, (cells + 1) * cell_w), mode="bilinear", align_corners=False)
    shift_y = torch.randint(0, cell_h, (num_masks,), generator=generator)
    shift_x = torch.randint(0, cell_w, (num_masks,), generator=generator)
    rows = (shift_y[:, None] + torch.arange(height)[None]).clamp(max=up.shape[-2] - 1)  # (M, H)
    cols = (shift_x[:, None] + torch.arange(width)[None]).clamp(max=up.shape[-1] - 1)  # (M, W)
    index = torch.arange(num_masks)[:, None, None]
    return up[index, 0, rows[:, :, None], cols[:, None, :]].unsqueeze(1)  # (M, 1, H, W)


@torch.no_grad()
def rise_maps(model: nn.Module, inputs: torch.Tensor, classes: np.ndarray, num_masks: int = 512, cells: int = 7,
              keep: float = 0.5, seed: int = 0, batch_size: int = 256) -> np.ndarray:
    """RISE saliency (N, H, W) in [0, 1] of `classes` (N,) for `inputs` (N, C, H, W), softmax scores.

    The masked-out pixels take the value 0 of the normalised image (the data's mean colour).
    """
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    height, width = inputs.shape[-2:]
    masks = rise_masks(num_masks, height, width, min(cells, height), keep, generator).to(inputs.device)
    maps = []
    for image, cls in zip(inputs, classes, strict=True):
        scores = []
        for start in range(0, num_masks, batch_size):
            chunk = masks[start : start + batch_size]  # (m, 1, H, W)
            scores.append(model(image[None] * chunk).softmax(dim=1)[:, int(cls)])  # (m,)
        score = torch.cat(scores)  # (M,)
        saliency = (score[:, None, None] * masks[:, 0]).sum(0) / (num_masks * keep)  # (H, W)
        saliency = saliency - saliency.min()
        maps.append((saliency / saliency.max().clamp(min=1e-12)).cpu().numpy())
    return np.stack(maps).astype(np.float32)
