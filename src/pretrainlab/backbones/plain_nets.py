"""The "untrainable" networks of guidance experiments: a fully connected network and a deep plain CNN, with the
deep CNN's residual twin as their guide.

Subramaniam, Mayo, Conwell, Poggio, Katz, Cheung, Barbu, "Training the Untrainable: Introducing Inductive Bias
via Representational Alignment", arXiv 2410.20035. Fully connected networks (FCNs) overfit image classification;
deep CNNs without residual connections underfit (He et al.'s degradation problem, arXiv 1512.03385). Both train
better when their layers are pulled towards a CNN's or ResNet's representations (methods/guidance.py).
- `fcn_*`: flatten, then Linear + BatchNorm + ReLU layers; each hidden layer is an intermediate, (B, D, 1, 1).
- `deep_plain_cnn` / `deep_residual_cnn`: the same 3 stages of 3x3 conv-BN-ReLU pairs (the first of a stage
  strided), with or without identity shortcuts around each pair; each pair is an intermediate, so a plain target
  and its residual guide align block by block.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from timm.models import register_model

from pretrainlab.backbones.model_api import StagedNet, drop_factory_kwargs


class ConvPair(nn.Module):
    """Two 3x3 conv-BN layers with ReLUs, optionally wrapped by a shortcut (1x1 conv when the shape changes)."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, residual: bool) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_chs, out_chs, 3, stride, 1, bias=False), nn.BatchNorm2d(out_chs), nn.ReLU(inplace=True),
            nn.Conv2d(out_chs, out_chs, 3, 1, 1, bias=False), nn.BatchNorm2d(out_chs))
        self.residual = residual
        self.shortcut = None if not residual else nn.Identity() if stride == 1 and in_chs == out_chs else \
            nn.Sequential(nn.Conv2d(in_chs, out_chs, 1, stride, bias=False), nn.BatchNorm2d(out_chs))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return self.act(out + self.shortcut(x) if self.residual else out)


class DeepConvNet(StagedNet):
    """A 3x3 stem, then `blocks_per_stage` conv pairs in each of three stages (strides 1, 2, 2).

    Args:
        residual: identity shortcuts around every pair (a ResNet) or none (a plain network of 2 * blocks + 1 convs).
    """

    def __init__(self, residual: bool, in_chans: int = 3, num_classes: int = 1000, global_pool: str = "avg",
                 widths: tuple[int, ...] = (16, 32, 64), blocks_per_stage: int = 7, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_chans, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]),
                                  nn.ReLU(inplace=True))
        blocks, channels, self.feature_info = [], widths[0], []
        for stage, width in enumerate(widths):
            for index in range(blocks_per_stage):
                stride = 2 if stage > 0 and index == 0 else 1
                blocks.append(ConvPair(channels, width, stride, residual))
                self.feature_info.append({"num_chs": width, "reduction": 2**stage,
                                          "module": f"stages.{len(blocks) - 1}"})
                channels = width
        self.stages = nn.ModuleList(blocks)
        self.init_classifier(channels, num_classes, global_pool, drop_rate)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")


class FullyConnectedNet(StagedNet):
    """Flattened pixels through Linear + BatchNorm + ReLU layers; intermediates are (B, D, 1, 1).

    Args:
        widths: the hidden layers' widths (the last is the feature size).
    """

    def __init__(self, img_size: int = 32, in_chans: int = 3, num_classes: int = 1000, global_pool: str = "avg",
                 widths: tuple[int, ...] = (1024, 1024, 1024, 1024), drop_rate: float = 0.0) -> None:
        super().__init__()
        self.stem = nn.Flatten()
        layers, size = [], in_chans * img_size * img_size
        for width in widths:
            layers.append(nn.Sequential(nn.Linear(size, width), nn.BatchNorm1d(width), nn.ReLU(inplace=True)))
            size = width
        self.stages = nn.ModuleList(layers)
        self.feature_info = [{"num_chs": width, "reduction": img_size, "module": f"stages.{index}"}
                             for index, width in enumerate(widths)]
        self.init_classifier(size, num_classes, global_pool, drop_rate)

    def stage_map(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, None, None]  # (B, D) -> (B, D, 1, 1): a 1x1 "map", so dense tools and pooling apply


def _deep(residual: bool, **kwargs: Any) -> DeepConvNet:
    return DeepConvNet(residual, **drop_factory_kwargs(kwargs))


@register_model
def test_plain_cnn(**kwargs: Any) -> DeepConvNet:
    """A tiny plain CNN for tests."""
    return _deep(False, **{"widths": (4, 8, 8), "blocks_per_stage": 1, **kwargs})


@register_model
def deep_plain_cnn(**kwargs: Any) -> DeepConvNet:
    """43 convolutions, no shortcut: the deep CNN that underfits."""
    return _deep(False, **kwargs)


@register_model
def deep_residual_cnn(**kwargs: Any) -> DeepConvNet:
    """deep_plain_cnn with identity shortcuts: a CIFAR ResNet-44 layout (He et al., section 4.2)."""
    return _deep(True, **kwargs)


@register_model
def test_fcn(**kwargs: Any) -> FullyConnectedNet:
    """A tiny fully connected network for tests."""
    return FullyConnectedNet(**{"widths": (16, 16), **drop_factory_kwargs(kwargs)})


@register_model
def fcn_4x1024(**kwargs: Any) -> FullyConnectedNet:
    """Four hidden layers of 1024 units: the fully connected network that overfits."""
    return FullyConnectedNet(**drop_factory_kwargs(kwargs))
