"""SparK's light hierarchical (UNet-like) decoder: multi-scale CNN features with mask tokens -> pixels."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class UpsampleBlock(nn.Module):
    """Nearest upsampling to an exact size (any ratio: 7 -> 14 -> 28, or 4 -> 7), then a 3x3 conv-BN-ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = conv_bn_relu(in_channels, out_channels)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return self.conv(F.interpolate(x, size=size, mode="nearest"))


class HierarchicalDecoder(nn.Module):
    """Fills mask tokens into every feature map, then upsamples from the coarsest, adding each finer map.

    Each level: masked positions get a learned per-level mask token (1, C_i, 1, 1), then BatchNorm and a 3x3
    conv to the decoder width of that level (SparK's "densify" step). The decoder width halves with every
    doubling of resolution (down to `min_width`); after the finest feature map it keeps upsampling, without
    skips, to the image size, where a 1x1 conv predicts the pixels.

    Args:
        channels, sizes: channels and (H, W) of the encoder's feature maps, finest first, one per resolution.
        image_size: (H, W) of the output.
        width: decoder width at the coarsest level.
        out_channels: predicted channels per pixel.
    """

    def __init__(self, channels: list[int], sizes: list[tuple[int, int]], image_size: tuple[int, int], width: int,
                 out_channels: int, min_width: int = 16) -> None:
        super().__init__()
        if width < 1 or len(channels) != len(sizes) or not channels:
            raise ValueError(f"need one size per feature map and width >= 1, got {channels}, {sizes}, {width}")
        self.sizes = [tuple(size) for size in sizes]
        coarse_to_fine = list(range(len(channels)))[::-1]
        widths = {level: max(min_width, width // 2**step) for step, level in enumerate(coarse_to_fine)}
        self.mask_tokens = nn.ParameterList(nn.Parameter(torch.zeros(1, c, 1, 1)) for c in channels)
        self.densify = nn.ModuleList(
            nn.Sequential(nn.BatchNorm2d(c), nn.Conv2d(c, widths[level], 3, padding=1))
            for level, c in enumerate(channels)
        )
        self.up = nn.ModuleList(UpsampleBlock(widths[level + 1], widths[level]) for level in range(len(channels) - 1))
        self.fuse = nn.ModuleList(conv_bn_relu(widths[level], widths[level]) for level in range(len(channels) - 1))
        # past the finest feature map (e.g. a stride-2 stem): double the resolution until the image size
        self.extra_sizes = []
        size, extra_width = self.sizes[0], widths[0]
        self.extra = nn.ModuleList()
        while size[0] < image_size[0] or size[1] < image_size[1]:
            size = (min(image_size[0], size[0] * 2), min(image_size[1], size[1] * 2))
            self.extra_sizes.append(size)
            self.extra.append(UpsampleBlock(extra_width, max(min_width, extra_width // 2)))
            extra_width = max(min_width, extra_width // 2)
        self.predict = nn.Conv2d(extra_width, out_channels, 1)
        for token in self.mask_tokens:
            nn.init.trunc_normal_(token, std=0.02)

    def forward(self, features: list[torch.Tensor], visible: list[torch.Tensor]) -> torch.Tensor:
        """features [(B, C_i, H_i, W_i)] finest first, visible [(B, 1, H_i, W_i)] 1 = visible -> (B, out, H, W)."""
        dense = [
            project(torch.where(seen.bool(), feature, token.to(feature.dtype)))
            for feature, seen, token, project in zip(features, visible, self.mask_tokens, self.densify, strict=True)
        ]
        x = dense[-1]  # coarsest
        for level in range(len(dense) - 2, -1, -1):
            x = self.fuse[level](self.up[level](x, self.sizes[level]) + dense[level])
        for block, size in zip(self.extra, self.extra_sizes, strict=True):
            x = block(x, size)
        return self.predict(x)
