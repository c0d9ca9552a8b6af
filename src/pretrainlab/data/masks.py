"""Mask generators for masked image modelling; True marks a masked (hidden) patch."""

from __future__ import annotations

import math

import torch

from pretrainlab.errors import PretrainlabError


def random_patch_mask(batch: int, num_patches: int, mask_ratio: float, generator: torch.Generator | None = None,
                      device: torch.device | str = "cpu", round_up: bool = False) -> torch.Tensor:
    """Uniformly random masks with exactly round(mask_ratio * L) masked patches per image: (B, L) bool.

    With `round_up`, ceil(mask_ratio * L) patches are masked instead (SimMIM's code; a float error below
    1e-9 does not round up).
    """
    if not 0 <= mask_ratio < 1:
        raise PretrainlabError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
    exact = mask_ratio * num_patches
    num_masked = math.ceil(exact - 1e-9) if round_up else int(round(exact))
    noise = torch.rand(batch, num_patches, generator=generator, device=device)
    ranks = noise.argsort(dim=1).argsort(dim=1)  # rank of every patch's noise within its image
    return ranks < num_masked


def block_mask(batch: int, grid: tuple[int, int], mask_ratio: float, generator: torch.Generator | None = None,
               device: torch.device | str = "cpu", min_block: int = 2) -> torch.Tensor:
    """BEiT-style block-wise masks: square-ish blocks until about `mask_ratio` of the grid is hidden: (B, L)."""
    height, width = grid
    target = int(round(mask_ratio * height * width))
    masks = torch.zeros(batch, height, width, dtype=torch.bool, device=device)
    for index in range(batch):
        for _ in range(10 * height * width):  # bounded: stops even when blocks keep overlapping
            if int(masks[index].sum()) >= target:
                break
            side_h = int(torch.randint(min_block, max(min_block, height // 2) + 1, (1,), generator=generator))
            side_w = int(torch.randint(min_block, max(min_block, width // 2) + 1, (1,), generator=generator))
            top = int(torch.randint(0, height - side_h + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - side_w + 1, (1,), generator=generator))
            masks[index, top : top + side_h, left : left + side_w] = True
    return masks.flatten(1)


def keep_indices(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Splits equal-count masks into (visible indices (B, L_keep), masked indices (B, L_mask)), each sorted."""
    counts = mask.sum(dim=1)
    if not bool((counts == counts[0]).all()):
        raise ValueError("keep_indices needs the same number of masked patches in every image")
    order = mask.int().argsort(dim=1, stable=True)  # visible (0) first, original order kept
    num_visible = mask.shape[1] - int(counts[0])
    return order[:, :num_visible], order[:, num_visible:]


def coarse_patch_mask(batch: int, grid: tuple[int, int], block: int, mask_ratio: float,
                      generator: torch.Generator | None = None, device: torch.device | str = "cpu") -> torch.Tensor:
    """SimMIM's masks: random `block` x `block` squares of patches (mask patches larger than model patches): (B, L).

    The mask is drawn on a grid of ceil(rows / block) x ceil(cols / block) cells, each cell covering
    block x block patches, and cropped to `grid`; where block does not divide the grid the share hidden
    is close to, not exactly, `mask_ratio`. ceil(mask_ratio * cells) cells are hidden, as SimMIM's
    `MaskGenerator` does (a 2x2 cell grid at ratio 0.6 hides 3 cells, not round(2.4) = 2).
    """
    if block < 1:
        raise PretrainlabError(f"mask block must be >= 1 patch, got {block}")
    rows, cols = grid
    coarse_rows, coarse_cols = -(-rows // block), -(-cols // block)
    coarse = random_patch_mask(batch, coarse_rows * coarse_cols, mask_ratio, generator, device, round_up=True)
    coarse = coarse.view(batch, coarse_rows, coarse_cols)
    fine = coarse.repeat_interleave(block, dim=1).repeat_interleave(block, dim=2)[:, :rows, :cols]
    return fine.reshape(batch, rows * cols)
