"""PixPro's heads on feature maps: a 1x1-convolution projector and the pixel propagation module (PPM).

Xie et al., "Propagate Yourself: Exploring Pixel-Level Consistency for Unsupervised Visual Representation
Learning", arXiv 2011.10043, sections 3.1-3.2.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class ConvProjectionHead(nn.Module):
    """The MLP of a projection head applied to every pixel: 1x1 conv -> BatchNorm -> ReLU -> 1x1 conv.

    Args:
        in_dim: channels of the feature map.
        hidden_dim: hidden channels (4096 in the paper's ResNet-50 setting).
        out_dim: projected channels (256 in the paper).
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(in_dim, hidden_dim, 1), nn.BatchNorm2d(hidden_dim), nn.ReLU(inplace=True),
            nn.Conv2d(hidden_dim, out_dim, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_dim, h, w) -> (B, out_dim, h, w)."""
        return self.layers(x)


class PixelPropagation(nn.Module):
    """y_i = sum_j s(x_i, x_j) g(x_j) with s = max(cos(x_i, x_j), 0) ** gamma (the paper's eq. 3-4).

    Each output pixel is a smoothing of the transformed features of the pixels that look like it, which
    is what makes the learned features spatially smooth (the paper's "propagation").

    Args:
        dim: channels of the projected feature map.
        sharpness: gamma, the exponent that sharpens the similarity (2 in the paper).
        transform_layers: depth of g: 0 (identity), 1 (a 1x1 conv, the paper's best) or 2 (conv-BN-ReLU-conv).
    """

    def __init__(self, dim: int, sharpness: float = 2.0, transform_layers: int = 1) -> None:
        super().__init__()
        if sharpness <= 0:
            raise ValueError(f"sharpness (gamma) must be > 0, got {sharpness}")
        if transform_layers not in (0, 1, 2):
            raise ValueError(f"transform_layers must be 0, 1 or 2, got {transform_layers}")
        self.sharpness = sharpness
        if transform_layers == 0:
            self.transform: nn.Module = nn.Identity()
        elif transform_layers == 1:
            self.transform = nn.Conv2d(dim, dim, 1)
        else:
            self.transform = ConvProjectionHead(dim, dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) -> (B, C, h, w)."""
        batch, channels, height, width = x.shape
        values = F.normalize(self.transform(x), dim=1).flatten(2)  # (B, C, N)
        keys = F.normalize(x, dim=1).flatten(2)  # (B, C, N)
        similarity = (keys.transpose(1, 2) @ keys).clamp(min=0).pow(self.sharpness)  # (B, N, N), [i, j] = s_ij
        propagated = values @ similarity.transpose(1, 2)  # (B, C, N): column i = sum_j s_ij g(x_j)
        return propagated.view(batch, channels, height, width)
