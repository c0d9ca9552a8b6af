"""Network dissection (Bau, Zhou, Khosla, Oliva and Torralba, "Network Dissection: Quantifying Interpretability of
Deep Visual Representations", arXiv 1704.05796), on images whose per-pixel classes are known (seg: or composed:).

For every channel k of a layer: its threshold T_k is the top `quantile` (0.5 %) of all its activation values over
the dataset; its activation maps, upsampled bilinearly to the masks' size, are thresholded at T_k; the IoU with the
pixels of concept c, summed over the dataset, is |M_k & L_c| / |M_k | L_c|. A channel is labelled with its best
concept when that IoU exceeds 0.04, as in the paper. Also: each channel's top-activating image patches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

QUANTILE = 0.005
LABEL_IOU = 0.04


@dataclass
class Dissection:
    """iou (channels, concepts); best (channels,) concept index; best_iou (channels,); labelled (channels,) bool."""

    iou: np.ndarray
    best: np.ndarray
    best_iou: np.ndarray
    labelled: np.ndarray


def channel_thresholds(activations: torch.Tensor, quantile: float = QUANTILE) -> torch.Tensor:
    """activations (N, C, h, w) -> (C,) thresholds T_k with P(a_k > T_k) = quantile over all images and positions."""
    values = activations.transpose(0, 1).reshape(activations.shape[1], -1).float()  # (C, N h w)
    return torch.quantile(values, 1 - quantile, dim=1) if values.shape[1] <= 16_000_000 else values.max(dim=1).values


def dissect(activations: torch.Tensor, masks: np.ndarray, concepts: int, quantile: float = QUANTILE,
            label_iou: float = LABEL_IOU, batch: int = 64) -> Dissection:
    """activations (N, C, h, w), masks (N, H, W) of concept ids 0..concepts-1 (others ignored) -> a Dissection."""
    thresholds = channel_thresholds(activations, quantile)  # (C,)
    channels = activations.shape[1]
    intersection = torch.zeros(channels, concepts, dtype=torch.float64)
    union = torch.zeros(channels, concepts, dtype=torch.float64)
    size = masks.shape[1:]
    for start in range(0, len(activations), batch):
        up = F.interpolate(activations[start : start + batch].float(), size=size, mode="bilinear", align_corners=False)
        on = (up > thresholds.view(1, -1, 1, 1)).flatten(2).double()  # (b, C, H W)
        labels = torch.from_numpy(masks[start : start + batch].astype(np.int64)).flatten(1)  # (b, H W)
        concept = F.one_hot(labels.clamp(max=concepts), concepts + 1)[..., :concepts].double()  # (b, H W, K)
        inter = torch.einsum("bcp,bpk->ck", on, concept)
        intersection += inter
        union += on.sum(dim=(0, 2))[:, None] + concept.sum(dim=(0, 1))[None, :] - inter
    iou = (intersection / union.clamp(min=1)).numpy()
    best = iou.argmax(axis=1)
    best_iou = iou[np.arange(channels), best]
    return Dissection(iou, best, best_iou, best_iou > label_iou)


def top_patches(activations: torch.Tensor, pixels: np.ndarray, channels: list[int], count: int = 6,
                patch: int | None = None) -> list[list[np.ndarray]]:
    """For each channel, crops (patch, patch, C) of the `count` images that excite it most, around the maximum."""
    _, _, height, width = activations.shape
    size = pixels.shape[1]
    stride = size / height
    patch = patch or max(6, int(round(3 * stride)))
    half = patch // 2
    padded = np.pad(pixels, ((0, 0), (half, half), (half, half), (0, 0)))
    crops = []
    for channel in channels:
        maps = activations[:, channel].flatten(1)  # (N, h w)
        peaks, where = maps.max(dim=1)
        chosen = peaks.argsort(descending=True)[:count].tolist()
        row_crops = []
        for index in chosen:
            row, col = divmod(int(where[index]), width)
            centre_y, centre_x = int((row + 0.5) * stride), int((col + 0.5) * stride)
            row_crops.append(padded[index, centre_y : centre_y + patch, centre_x : centre_x + patch])
        crops.append(row_crops)
    return crops
