"""RaftMLP: an MLP-Mixer whose token mixing runs along one axis of the grid at a time, on rafts of channels.

Tatsunami, Taki, "RaftMLP: How Much Can Be Done Without Attention and with Less Spatial Locality?",
arXiv 2108.04384 (ACCV 2022).

A raft-token-mixing block splits the C channels into r groups of C / r ("rafts" of r channels each) and mixes
- vertically: an MLP over the r * h values of one raft in one column (each column and raft alike),
- horizontally: an MLP over the r * w values of one raft in one row,
then a channel-mixing MLP over the C channels of each position; each with a pre-LayerNorm and a residual
connection. Token-mixing MLPs expand by 2, channel MLPs by 4. The network is hierarchical (four levels);
each level starts with the cross-scale MLP embedding, which concatenates the patches of several kernel sizes
around each position (unfolded with the stride of the smallest) and projects them with one linear layer.
The token-mixing MLPs are sized to the level's grid, so a model takes the image size it was built for.
RaftMLP-S (9.9 M parameters) is the paper's smallest model.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn
from timm.layers import DropPath, LayerNorm2d, Mlp, trunc_normal_
from timm.models import register_model

from pretrainlab.backbones.model_api import StagedNet, check_divisible, drop_factory_kwargs, drop_path_rates


class CrossScaleEmbedding(nn.Module):
    """(B, C_in, H, W) -> (B, H / s, W / s, C_out): patches of every kernel size k (stride s = the smallest k,
    padding (k - s) / 2) concatenated per position, then one linear projection."""

    def __init__(self, in_chs: int, out_chs: int, kernels: tuple[int, ...]) -> None:
        super().__init__()
        self.stride = min(kernels)
        if any(k % self.stride for k in kernels):
            raise ValueError(f"embedding kernels {kernels} must be multiples of the smallest")
        self.unfolds = nn.ModuleList(nn.Unfold(k, padding=(k - self.stride) // 2, stride=self.stride)
                                     for k in kernels)
        self.proj = nn.Linear(in_chs * sum(k * k for k in kernels), out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2] // self.stride, x.shape[-1] // self.stride
        patches = torch.cat([unfold(x) for unfold in self.unfolds], dim=1)  # (B, C_in * sum k^2, h * w)
        return self.proj(patches.transpose(1, 2)).reshape(x.shape[0], height, width, -1)


class RaftMixing(nn.Module):
    """x + MLP over the (raft, position) values along one axis: (B, h, w, C) -> (B, h, w, C)."""

    def __init__(self, channels: int, raft: int, length: int, vertical: bool, expansion: int = 2,
                 drop_path: float = 0.0) -> None:
        super().__init__()
        self.raft, self.vertical = raft, vertical
        self.norm = nn.LayerNorm(channels)
        self.mlp = Mlp(raft * length, raft * length * expansion)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, height, width, channels = x.shape
        y = self.norm(x).reshape(batch, height, width, self.raft, channels // self.raft)
        # vertical: (B, C / r, w, r, h), mixed over (r, h); horizontal: (B, C / r, h, r, w), mixed over (r, w)
        y = y.permute(0, 4, 2, 3, 1) if self.vertical else y.permute(0, 4, 1, 3, 2)
        shape = y.shape
        y = self.mlp(y.reshape(*shape[:3], -1)).reshape(shape)
        y = y.permute(0, 4, 2, 3, 1) if self.vertical else y.permute(0, 2, 4, 3, 1)  # back to (B, h, w, r, C / r)
        return x + self.drop_path(y.reshape(batch, height, width, channels))


class RaftBlock(nn.Module):
    """Vertical raft mixing, horizontal raft mixing, channel mixing."""

    def __init__(self, channels: int, raft: int, grid: tuple[int, int], drop_path: float = 0.0) -> None:
        super().__init__()
        self.vertical = RaftMixing(channels, raft, grid[0], True, drop_path=drop_path)
        self.horizontal = RaftMixing(channels, raft, grid[1], False, drop_path=drop_path)
        self.norm = nn.LayerNorm(channels)
        self.channel_mlp = Mlp(channels, channels * 4)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.horizontal(self.vertical(x))
        return x + self.drop_path(self.channel_mlp(self.norm(x)))


class RaftLevel(nn.Module):
    """Cross-scale embedding, then RaftMLP blocks: (B, C_in, H, W) -> (B, C, H / s, W / s)."""

    def __init__(self, in_chs: int, out_chs: int, kernels: tuple[int, ...], depth: int, raft: int,
                 grid: tuple[int, int], drop_paths: list[float]) -> None:
        super().__init__()
        if out_chs % raft:
            raise ValueError(f"level width {out_chs} is not divisible by the raft size {raft}")
        self.embed = CrossScaleEmbedding(in_chs, out_chs, kernels)
        self.blocks = nn.Sequential(*[RaftBlock(out_chs, raft, grid, rate) for rate in drop_paths[:depth]])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.embed(x)).permute(0, 3, 1, 2)


class RaftMLP(StagedNet):
    """Levels of raft-token-mixing blocks, LayerNorm, global average pooling, classifier.

    Args:
        widths, depths: channels and blocks per level.
        kernels: the cross-scale embedding kernels of each level (the first is the level's stride).
        raft: channels per raft (r = 2 in the paper's models).
    """

    def __init__(self, img_size: int = 224, in_chans: int = 3, num_classes: int = 1000, global_pool: str = "avg",
                 widths: tuple[int, ...] = (64, 128, 256, 512), depths: tuple[int, ...] = (2, 2, 6, 2),
                 kernels: tuple[tuple[int, ...], ...] = ((4, 8), (2, 4), (2, 4), (2,)), raft: int = 2,
                 drop_rate: float = 0.0, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        strides = [min(k) for k in kernels]
        check_divisible(img_size, math.prod(strides), "network's total stride")
        rates = drop_path_rates(drop_path_rate, sum(depths))
        self.stem = nn.Identity()
        levels, channels, size, self.feature_info = [], in_chans, img_size, []
        for index, (width, depth, level_kernels) in enumerate(zip(widths, depths, kernels, strict=True)):
            size //= min(level_kernels)
            levels.append(RaftLevel(channels, width, tuple(level_kernels), depth, raft, (size, size),
                                    rates[sum(depths[:index]):]))
            self.feature_info.append({"num_chs": width, "reduction": img_size // size, "module": f"stages.{index}"})
            channels = width
        self.stages = nn.ModuleList(levels)
        self.norm = LayerNorm2d(channels)
        self.init_classifier(channels, num_classes, global_pool, drop_rate)
        self.apply(_init_weights)


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def _raftmlp(**kwargs: Any) -> RaftMLP:
    return RaftMLP(**drop_factory_kwargs(kwargs))


@register_model
def test_raftmlp(**kwargs: Any) -> RaftMLP:
    """A few-thousand-parameter RaftMLP for tests."""
    return _raftmlp(**{"img_size": 32, "widths": (8, 16), "depths": (1, 1), "kernels": ((4, 8), (2,)), **kwargs})


@register_model
def raftmlp_nano_cifar(**kwargs: Any) -> RaftMLP:
    """Three levels (16, 8, 4 px grids at 32 px), for 32 px images on a CPU."""
    return _raftmlp(**{"img_size": 32, "widths": (64, 128, 256), "depths": (1, 1, 2),
                       "kernels": ((2, 4), (2, 4), (2,)), **kwargs})


@register_model
def raftmlp_s_cifar(**kwargs: Any) -> RaftMLP:
    """RaftMLP-S's widths and depths with a 2 px first embedding, for CIFAR-sized images (grids 16 to 2)."""
    return _raftmlp(**{"img_size": 32, "kernels": ((2, 4), (2, 4), (2, 4), (2,)), **kwargs})


@register_model
def raftmlp_s(**kwargs: Any) -> RaftMLP:
    """RaftMLP-S with the cross-scale embedding, the paper's smallest model."""
    return _raftmlp(**kwargs)
