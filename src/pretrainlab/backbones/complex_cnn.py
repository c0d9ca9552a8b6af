"""A complex-valued residual CNN and the real CNN of equal parameter count it is compared with.

Chatterjee, Tummala, Speck, Nürnberger, "Complex Network for Complex Problems: A comparative study of CNN and
Complex-valued CNN", arXiv 2302.04584. The paper asks whether complex-valued CNNs win because of complex
features or only because a complex weight holds two real numbers, and answers it by comparing the CV-CNN with
a real CNN of the same topology and twice the parameters ("CNNx2"). Here:
- `complex_*`: complex convolutions, complex batch normalisation, CReLU or modReLU (`activation`), and
  magnitude max-pooling between stages (the complex value of largest modulus in each window); the image enters
  as the real part with a zero imaginary part, and the features are the moduli |z|, averaged over positions.
- `real_*`: the same topology with real layers, its widths scaled (by about sqrt 2) so that its parameter count
  matches the complex network's; a test checks the counts agree within 3 %.
Both are ResNets of basic blocks; `complex_resnet18_cifar` is ResNet-18 with complex weights, the size of the
paper's classification models.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn as nn
from timm.models import register_model

from pretrainlab.backbones.complex_layers import (
    ComplexBatchNorm2d,
    ComplexConv2d,
    CReLU,
    MagnitudeMaxPool2d,
    ModReLU,
    magnitude,
)
from pretrainlab.backbones.model_api import StagedNet, check_divisible, drop_factory_kwargs

ACTIVATIONS = ("crelu", "modrelu")


class Layers:
    """The layer constructors of one number system."""

    def __init__(self, complex_valued: bool, activation: str = "crelu") -> None:
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got '{activation}'")
        self.complex_valued, self.activation = complex_valued, activation

    def conv(self, in_chs: int, out_chs: int, kernel: int, stride: int = 1) -> nn.Module:
        if self.complex_valued:
            return ComplexConv2d(in_chs, out_chs, kernel, stride, kernel // 2)
        return nn.Conv2d(in_chs, out_chs, kernel, stride, kernel // 2, bias=False)

    def norm(self, channels: int) -> nn.Module:
        return ComplexBatchNorm2d(channels) if self.complex_valued else nn.BatchNorm2d(channels)

    def act(self, channels: int) -> nn.Module:
        if self.complex_valued and self.activation == "modrelu":
            return ModReLU(channels)
        return CReLU() if self.complex_valued else nn.ReLU()

    def pool(self) -> nn.Module:
        return MagnitudeMaxPool2d(2) if self.complex_valued else nn.MaxPool2d(2)


class BasicBlock(nn.Module):
    """act(x' + norm(conv(act(norm(conv(x)))))), x' = x or a 1x1 projection when the width changes."""

    def __init__(self, layers: Layers, in_chs: int, out_chs: int) -> None:
        super().__init__()
        self.conv1, self.norm1, self.act1 = layers.conv(in_chs, out_chs, 3), layers.norm(out_chs), layers.act(out_chs)
        self.conv2, self.norm2, self.act2 = layers.conv(out_chs, out_chs, 3), layers.norm(out_chs), layers.act(out_chs)
        self.shortcut = nn.Identity() if in_chs == out_chs else nn.Sequential(
            layers.conv(in_chs, out_chs, 1), layers.norm(out_chs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.norm2(self.conv2(self.act1(self.norm1(self.conv1(x)))))
        return self.act2(out + self.shortcut(x))


class TwinResNet(StagedNet):
    """Stem conv, then stages of basic blocks with a 2x2 max-pool in front of every stage but the first.

    Args:
        complex_valued: complex layers (features are moduli) or real ones.
        widths, depths: channels (complex channels for a complex network) and blocks per stage.
        activation: "crelu" or "modrelu" (complex networks).
    """

    def __init__(self, complex_valued: bool, img_size: int = 32, in_chans: int = 3, num_classes: int = 1000,
                 global_pool: str = "avg", widths: tuple[int, ...] = (64, 128, 256, 512),
                 depths: tuple[int, ...] = (2, 2, 2, 2), activation: str = "crelu", drop_rate: float = 0.0) -> None:
        super().__init__()
        check_divisible(img_size, 2 ** (len(widths) - 1), "network's total stride")
        layers = Layers(complex_valued, activation)
        self.complex_valued = complex_valued
        self.stem = nn.Sequential(layers.conv(in_chans, widths[0], 3), layers.norm(widths[0]), layers.act(widths[0]))
        stages, channels, self.feature_info = [], widths[0], []
        for index, (width, depth) in enumerate(zip(widths, depths, strict=True)):
            blocks = [layers.pool()] if index > 0 else []
            for _ in range(depth):
                blocks.append(BasicBlock(layers, channels, width))
                channels = width
            stages.append(nn.Sequential(*blocks))
            self.feature_info.append({"num_chs": width, "reduction": 2**index, "module": f"stages.{index}"})
        self.stages = nn.ModuleList(stages)
        self.init_classifier(channels, num_classes, global_pool, drop_rate)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def run_stages(self, x: torch.Tensor, count: int) -> list[torch.Tensor]:
        if self.complex_valued:  # the image is the real part; the imaginary part starts at zero
            x = torch.cat([x, torch.zeros_like(x)], dim=1)
        return super().run_stages(x, count)

    def stage_map(self, x: torch.Tensor) -> torch.Tensor:
        return magnitude(x) if self.complex_valued else x


def parameter_count(**kwargs: Any) -> int:
    """Parameters of the feature extractor (no classifier), counted on the meta device (nothing allocated)."""
    with torch.device("meta"):
        return sum(p.numel() for p in TwinResNet(num_classes=0, **kwargs).parameters())


@functools.cache
def matched_real_widths(widths: tuple[int, ...], depths: tuple[int, ...], in_chans: int) -> tuple[int, ...]:
    """Widths of the real network whose parameter count is closest to the complex one with `widths`."""
    kwargs = {"depths": depths, "in_chans": in_chans}
    target = parameter_count(complex_valued=True, widths=widths, **kwargs)
    low, high = 1.0, 4.0  # the real count grows with the scale; about sqrt(2) matches wide networks
    for _ in range(12):  # a scale within 0.001: under one channel at these widths
        scale = (low + high) / 2
        if parameter_count(complex_valued=False, widths=_scaled(widths, scale), **kwargs) < target:
            low = scale
        else:
            high = scale
    candidates = [_scaled(widths, low), _scaled(widths, high)]
    return min(candidates, key=lambda w: abs(parameter_count(complex_valued=False, widths=w, **kwargs) - target))


def _scaled(widths: tuple[int, ...], scale: float) -> tuple[int, ...]:
    return tuple(max(1, round(w * scale)) for w in widths)


def _twins(widths: tuple[int, ...], depths: tuple[int, ...]) -> tuple[Any, Any]:
    """The entry points of a complex network and its real twin of equal parameter count."""

    def complex_net(**kwargs: Any) -> TwinResNet:
        return TwinResNet(True, **{"widths": widths, "depths": depths, **drop_factory_kwargs(kwargs)})

    def real_net(**kwargs: Any) -> TwinResNet:
        kwargs = drop_factory_kwargs(kwargs)
        kwargs.pop("activation", None)  # a complex-only choice
        real_widths = matched_real_widths(widths, depths, kwargs.get("in_chans", 3))
        return TwinResNet(False, **{"widths": real_widths, "depths": depths, **kwargs})

    return complex_net, real_net


TWINS: dict[str, str] = {}  # complex model name -> its real twin's name


def _register(name: str, real_name: str, widths: tuple[int, ...], depths: tuple[int, ...], doc: str) -> None:
    complex_net, real_net = _twins(widths, depths)
    TWINS[name] = real_name
    for function, function_name, kind in ((complex_net, name, "complex"), (real_net, real_name, "real")):
        function.__name__ = function_name
        function.__doc__ = f"{doc} ({kind}-valued)."
        function.__module__ = __name__
        register_model(function)


_register("test_complex_cnn", "test_real_cnn", (6, 12), (1, 1), "A tiny twin for tests")
_register("complex_cnn_nano", "real_cnn_nano", (16, 32, 64), (1, 1, 1), "Three one-block stages for a CPU")
_register("complex_resnet18_cifar", "real_resnet18x2_cifar", (64, 128, 256, 512), (2, 2, 2, 2),
          "ResNet-18 at 32 px")
