"""MOAT: mobile convolution (MBConv) and attention merged into one block.

Yang, Qiao, Liu, Kim, Wang, Yuille, Chen, "MOAT: Alternating Mobile Convolution and Attention Brings Strong
Vision Models", arXiv 2210.01820 (ICLR 2023).

A MOAT block replaces the transformer block's MLP by an MBConv placed *before* the self-attention:
    x = x + MBConv(x)            (1x1 expand x4, 3x3 depth-wise, 1x1 project; BN + GELU, pre-norm)
    x = x + Attention(LN(x))     (multi-head, relative position bias, heads of 32 channels)
so downsampling happens in the MBConv's strided depth-wise convolution instead of a separate patch merging,
and the depth-wise convolution carries information across attention windows. The network: a two-convolution
stem, two stages of MBConv blocks (with squeeze-and-excitation, as CoAtNet's), then two stages of MOAT
blocks; attention is global in ImageNet models and windowed (`window_sizes`) where maps are large.
tiny-MOAT-0 (3.4 M parameters) is the paper's smallest model, MOAT-0 (27.8 M) its smallest full MOAT.
The `_cifar` variants keep the stem at full resolution (stride 1), so a 32 px image ends as a 2x2 map.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, SqueezeExcite, trunc_normal_
from timm.layers.pos_embed_rel import RelPosBias
from timm.models import register_model

from pretrainlab.backbones.model_api import StagedNet, check_divisible, drop_factory_kwargs, drop_path_rates


class MBConv(nn.Module):
    """x + Project(SE(DW(Expand(BN(x))))), pre-norm; the shortcut is avg-pool + 1x1 conv when shape changes."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, expand: int = 4, use_se: bool = True,
                 drop_path: float = 0.0) -> None:
        super().__init__()
        hidden = out_chs * expand
        self.shortcut = nn.Identity() if stride == 1 and in_chs == out_chs else nn.Sequential(
            nn.AvgPool2d(stride) if stride > 1 else nn.Identity(), nn.Conv2d(in_chs, out_chs, 1))
        self.pre_norm = nn.BatchNorm2d(in_chs)
        self.expand = nn.Sequential(nn.Conv2d(in_chs, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.GELU())
        self.depthwise = nn.Sequential(nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
                                       nn.BatchNorm2d(hidden), nn.GELU())
        self.se = SqueezeExcite(hidden, rd_ratio=0.25 / expand, act_layer=nn.GELU) if use_se else nn.Identity()
        self.project = nn.Conv2d(hidden, out_chs, 1)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch = self.project(self.se(self.depthwise(self.expand(self.pre_norm(x)))))
        return self.shortcut(x) + self.drop_path(branch)


class GridAttention(nn.Module):
    """Multi-head self-attention over a (h, w) map, globally or in non-overlapping windows, with a learned
    relative position bias per head. Input and output (B, C, h, w)."""

    def __init__(self, dim: int, head_dim: int, window: tuple[int, int]) -> None:
        super().__init__()
        self.num_heads = max(1, dim // head_dim)
        self.window = window
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, dim * 3)
        self.rel_pos = RelPosBias(window, self.num_heads)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        wh, ww = self.window
        # (B, C, h, w) -> windows (B * nW, wh * ww, C)
        tokens = x.reshape(batch, channels, height // wh, wh, width // ww, ww).permute(0, 2, 4, 3, 5, 1)
        tokens = self.norm(tokens.reshape(-1, wh * ww, channels))
        q, k, v = self.qkv(tokens).reshape(tokens.shape[0], wh * ww, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        bias = self.rel_pos.get_bias().to(q.dtype)  # (1, heads, N, N)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # (B nW, heads, N, d)
        out = self.proj(out.transpose(1, 2).reshape(-1, wh * ww, channels))
        out = out.reshape(batch, height // wh, width // ww, wh, ww, channels).permute(0, 5, 1, 3, 2, 4)
        return out.reshape(batch, channels, height, width)


class MoatBlock(nn.Module):
    """MBConv (without SE, downsampling when stride 2) followed by x + Attention(LN(x)); no MLP."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, grid: tuple[int, int], head_dim: int,
                 window: int | None, drop_path: float = 0.0) -> None:
        super().__init__()
        self.mbconv = MBConv(in_chs, out_chs, stride, use_se=False, drop_path=drop_path)
        size = grid if window is None else (window, window)
        if grid[0] % size[0] or grid[1] % size[1]:
            raise ValueError(f"attention window {size} does not tile the {grid} map; use a window that divides it")
        self.attention = GridAttention(out_chs, head_dim, size)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.mbconv(x)
        return x + self.drop_path(self.attention(x))


class Moat(StagedNet):
    """Stem, two MBConv stages, two MOAT stages, global average pooling and LayerNorm, classifier.

    Args:
        stem_width: channels of the two stem convolutions.
        widths, depths: channels and blocks of the four stages (each halves the resolution).
        stem_stride: 2 for ImageNet-sized inputs, 1 for 32 px images.
        window_sizes: the attention window of stages 3 and 4 (None: global attention over the stage's map).
    """

    def __init__(self, img_size: int = 224, in_chans: int = 3, num_classes: int = 1000, global_pool: str = "avg",
                 stem_width: int = 64, widths: tuple[int, ...] = (96, 192, 384, 768),
                 depths: tuple[int, ...] = (2, 3, 7, 2), head_dim: int = 32, stem_stride: int = 2,
                 window_sizes: tuple[int | None, int | None] = (None, None), drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0) -> None:
        super().__init__()
        reduction = stem_stride * 2 ** len(widths)
        check_divisible(img_size, reduction, "network's total stride")
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, stem_width, 3, stem_stride, 1, bias=False), nn.BatchNorm2d(stem_width), nn.GELU(),
            nn.Conv2d(stem_width, stem_width, 3, 1, 1))
        rates = iter(drop_path_rates(drop_path_rate, sum(depths)))
        stages, channels, size, self.feature_info = [], stem_width, img_size // stem_stride, []
        for index, (width, depth) in enumerate(zip(widths, depths, strict=True)):
            size //= 2
            blocks = []
            for block in range(depth):
                stride = 2 if block == 0 else 1
                if index < 2:
                    blocks.append(MBConv(channels, width, stride, drop_path=next(rates)))
                else:
                    blocks.append(MoatBlock(channels, width, stride, (size, size), head_dim,
                                            window_sizes[index - 2], next(rates)))
                channels = width
            stages.append(nn.Sequential(*blocks))
            self.feature_info.append({"num_chs": width, "reduction": img_size // size, "module": f"stages.{index}"})
        self.stages = nn.ModuleList(stages)
        self.final_norm = nn.LayerNorm(channels)
        self.init_classifier(channels, num_classes, global_pool, drop_rate)
        self.apply(_init_weights)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(B, C, h, w) -> LayerNorm of the global average (the paper's head) -> (B, C) or logits."""
        x = self.final_norm(self.global_pool(x))
        if self.drop_rate > 0:
            x = F.dropout(x, self.drop_rate, self.training)
        return x if pre_logits else self.fc(x)


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d):
        nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")


def _moat(**kwargs: Any) -> Moat:
    return Moat(**drop_factory_kwargs(kwargs))


@register_model
def test_moat(**kwargs: Any) -> Moat:
    """A few-thousand-parameter MOAT for tests (CIFAR stem)."""
    return _moat(**{"img_size": 32, "stem_width": 8, "widths": (8, 16, 16, 32), "depths": (1, 1, 1, 1),
                    "head_dim": 8, "stem_stride": 1, **kwargs})


@register_model
def moat_nano_cifar(**kwargs: Any) -> Moat:
    """Half of tiny-MOAT-0's depth, CIFAR stem: for 32 px images on a CPU."""
    return _moat(**{"img_size": 32, "stem_width": 32, "widths": (32, 64, 128, 256), "depths": (1, 2, 3, 1),
                    "stem_stride": 1, **kwargs})


@register_model
def tiny_moat_0_cifar(**kwargs: Any) -> Moat:
    """tiny-MOAT-0 with the CIFAR stem (stride 1)."""
    return _moat(**{"img_size": 32, "stem_width": 32, "widths": (32, 64, 128, 256), "stem_stride": 1, **kwargs})


@register_model
def tiny_moat_0(**kwargs: Any) -> Moat:
    """tiny-MOAT-0, the paper's smallest model (3.4 M parameters)."""
    return _moat(**{"stem_width": 32, "widths": (32, 64, 128, 256), **kwargs})


@register_model
def moat_0(**kwargs: Any) -> Moat:
    """MOAT-0 (27.8 M parameters)."""
    return _moat(**kwargs)
