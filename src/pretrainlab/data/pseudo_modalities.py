"""Extra modalities derived from an image without any network: grayscale, Sobel edges, k-means segments.

MultiMAE (arXiv 2204.01678) pre-trains on RGB, depth and semantic segmentation, the latter two made by
off-the-shelf networks as pseudo labels. Without such networks these stand in: a luminance channel,
an edge-strength map, and a categorical segmentation by k-means clustering of pixel colours (or
intensities), fitted once and then applied to every image, so a class means the same colour everywhere.
Inputs are batches (B, C, H, W) in [0, 1] on the training device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pretrainlab.data.color import LUMA, grayscale

SOBEL_X = ((-1.0, 0.0, 1.0), (-2.0, 0.0, 2.0), (-1.0, 0.0, 1.0))


def sobel_edges(images: torch.Tensor) -> torch.Tensor:
    """Gradient magnitude of the luminance, (B, C, H, W) -> (B, 1, H, W); borders replicate the edge pixel."""
    gray = grayscale(images)
    kernel_x = torch.tensor(SOBEL_X, dtype=images.dtype, device=images.device)
    kernels = torch.stack([kernel_x, kernel_x.t()]).unsqueeze(1)  # (2, 1, 3, 3): d/dx, d/dy
    gradients = F.conv2d(F.pad(gray, (1, 1, 1, 1), mode="replicate"), kernels)  # (B, 2, H, W)
    return gradients.pow(2).sum(dim=1, keepdim=True).add(1e-12).sqrt()


def luminance_order(centroids: torch.Tensor) -> torch.Tensor:
    """Indices sorting centroids (K, C) from dark to bright, so class ids are reproducible."""
    if centroids.shape[1] == 3:
        brightness = centroids @ torch.tensor(LUMA, dtype=centroids.dtype, device=centroids.device)
    else:
        brightness = centroids[:, 0]
    return brightness.argsort()


def assign_segments(images: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Nearest centroid of every pixel: images (B, C, H, W), centroids (K, C) -> class ids (B, H, W) int64."""
    pixels = images.permute(0, 2, 3, 1)  # (B, H, W, C)
    distances = (pixels.unsqueeze(-2) - centroids).pow(2).sum(dim=-1)  # (B, H, W, K)
    return distances.argmin(dim=-1)


def fit_kmeans(images: torch.Tensor, clusters: int, iterations: int = 20, max_pixels: int = 65_536) -> torch.Tensor:
    """Lloyd's k-means on the pixel colours of `images` (B, C, H, W): centroids (K, C), dark to bright.

    Deterministic: centroids start at evenly spaced luminance quantiles of an evenly strided pixel
    sample; a cluster that loses all its pixels keeps its previous centroid.
    """
    pixels = images.permute(0, 2, 3, 1).reshape(-1, images.shape[1]).float()  # (P, C)
    pixels = pixels[:: max(1, len(pixels) // max_pixels)]
    brightness = grayscale(pixels.t().reshape(1, -1, len(pixels), 1)).flatten()  # (P,)
    ranks = torch.linspace(0, len(pixels) - 1, clusters, device=pixels.device).round().long()
    centroids = pixels[brightness.argsort()[ranks]].clone()  # (K, C)
    for _ in range(iterations):
        labels = (pixels.unsqueeze(1) - centroids).pow(2).sum(dim=-1).argmin(dim=1)  # (P,)
        sums = torch.zeros_like(centroids).index_add_(0, labels, pixels)
        counts = torch.bincount(labels, minlength=clusters).unsqueeze(1).to(pixels.dtype)
        updated = torch.where(counts > 0, sums / counts.clamp(min=1), centroids)
        if torch.equal(updated, centroids):
            break
        centroids = updated
    return centroids[luminance_order(centroids)]
