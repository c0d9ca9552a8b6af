"""Pixel correspondence between two crops of one image, and PixPro's pixel-level consistency loss.

Xie, Lin, Zhang, Cao, Lin, Hu, "Propagate Yourself: Exploring Pixel-Level Consistency for Unsupervised
Visual Representation Learning", arXiv 2011.10043, section 3.1: two feature-map pixels (one per view) are
a positive pair when their centres, warped back into the source image, lie closer than a threshold
measured in feature-map bins.

Coordinates are fractions of the source image, as in `data.views.Views.boxes` (x0, y0, x1, y1) before
flipping; a flipped view shows its box mirrored left-right.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pretrainlab.losses.full_precision import in_full_precision


def pixel_centres(boxes: torch.Tensor, flipped: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Where every feature-map pixel centre of a view lies in the source image.

    Args:
        boxes: (B, 4) crop boxes (x0, y0, x1, y1) as fractions of the source image.
        flipped: (B,) bool, the view was mirrored left-right.
        height, width: feature-map size (h, w).

    Returns:
        (B, h * w, 2) source coordinates (x, y), row-major over the map like `flatten(2)`.
    """
    device, dtype = boxes.device, boxes.dtype
    column = (torch.arange(width, device=device, dtype=dtype) + 0.5) / width  # (w,) fraction across the view
    row = (torch.arange(height, device=device, dtype=dtype) + 0.5) / height  # (h,)
    x0, y0, x1, y1 = boxes.unbind(dim=1)  # (B,) each
    # A mirrored view's left edge is the box's right edge.
    column = torch.where(flipped[:, None], 1.0 - column[None], column[None])  # (B, w)
    x = x0[:, None] + column * (x1 - x0)[:, None]  # (B, w)
    y = y0[:, None] + row[None] * (y1 - y0)[:, None]  # (B, h)
    grid_x = x[:, None, :].expand(-1, height, -1)  # (B, h, w)
    grid_y = y[:, :, None].expand(-1, -1, width)
    return torch.stack([grid_x, grid_y], dim=-1).reshape(len(boxes), height * width, 2)


def bin_diagonal(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, 4) boxes -> (B,) diagonal of one feature-map bin in source-image fractions."""
    bin_width = (boxes[:, 2] - boxes[:, 0]) / width
    bin_height = (boxes[:, 3] - boxes[:, 1]) / height
    return torch.sqrt(bin_width**2 + bin_height**2)


def pixel_match_mask(boxes_a: torch.Tensor, flipped_a: torch.Tensor, boxes_b: torch.Tensor, flipped_b: torch.Tensor,
                     height: int, width: int, threshold: float = 0.7) -> torch.Tensor:
    """Positive pixel pairs between view A and view B of the same images.

    The distance between two pixel centres is divided by the larger of the two views' bin diagonals,
    so the threshold (0.7 in the paper) is in feature-map bins whatever the crop scales.

    Args:
        boxes_a, boxes_b: (B, 4) crop boxes; flipped_a, flipped_b: (B,) bool.
        height, width: feature-map size, the same for both views.
        threshold: largest normalised distance of a positive pair.

    Returns:
        (B, h * w, h * w) bool; [b, i, j] is True when pixel i of view A and pixel j of view B match.
    """
    centres_a = pixel_centres(boxes_a, flipped_a, height, width)  # (B, N, 2)
    centres_b = pixel_centres(boxes_b, flipped_b, height, width)
    distance = torch.cdist(centres_a, centres_b)  # (B, N, N)
    scale = torch.maximum(bin_diagonal(boxes_a, height, width), bin_diagonal(boxes_b, height, width))  # (B,)
    return distance / scale[:, None, None] < threshold


@in_full_precision
def pixel_consistency_loss(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of 2 - 2 cos(prediction_i, target_j) over positive pairs (i, j), image by image.

    Each image's pairs are averaged first, then images are averaged; images whose crops share no positive
    pair are left out of the mean (a zero loss with gradients when no image has any).

    Args:
        prediction: (B, C, h, w) propagated features of view A (gets gradients).
        target: (B, C, h, w) momentum-encoder features of view B (no gradient flows into it).
        mask: (B, h * w, h * w) bool from `pixel_match_mask`.
    """
    prediction = F.normalize(prediction.flatten(2), dim=1)  # (B, C, N)
    target = F.normalize(target.detach().flatten(2), dim=1).to(prediction.dtype)
    cosine = prediction.transpose(1, 2) @ target  # (B, N, N)
    weights = mask.to(cosine.dtype)
    pairs = weights.sum(dim=(1, 2))  # (B,)
    per_image = (cosine * weights).sum(dim=(1, 2)) / pairs.clamp(min=1.0)  # (B,) mean cosine of positive pairs
    has_pairs = (pairs > 0).to(cosine.dtype)
    # A weighted mean instead of boolean indexing: no host synchronisation on the GPU.
    return ((2.0 - 2.0 * per_image) * has_pairs).sum() / has_pairs.sum().clamp(min=1.0)
