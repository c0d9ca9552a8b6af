"""IBN-Net: ResNets that mix instance and batch normalisation in their early layers.

Pan, Luo, Shi, Tang, "Two at Once: Enhancing Learning and Generalization Capacities via IBN-Net",
arXiv 1807.09441 (ECCV 2018).

Instance normalisation removes per-image appearance (contrast, colour, style) while batch normalisation keeps
the content discrimination a classifier needs; appearance lives in the shallow layers, so IBN-Net puts IN there:
- IBN-a: the first normalisation of every residual block in stages 1-3 normalises half of its channels with IN
  (affine) and the other half with BN; stage 4 is unchanged.
- IBN-b: IN (affine) replaces the stem's BN, and an IN is added after the residual addition (before the ReLU)
  of the last block of stages 1 and 2.
Built from timm's ResNet by swapping modules of the new instance (timm's classes are untouched), so the state
dict is timm's plus the IN parameters. `_cifar` variants use the 3x3 stride-1 stem with no max-pool.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from timm.models import register_model
from timm.models.resnet import BasicBlock, Bottleneck, ResNet

from pretrainlab.backbones.model_api import drop_factory_kwargs
from pretrainlab.backbones.small import _cifar_resnet


class IBN(nn.Module):
    """InstanceNorm on the first `ratio` of the channels, BatchNorm on the rest: (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, channels: int, ratio: float = 0.5) -> None:
        super().__init__()
        self.half = int(channels * ratio)
        self.instance_norm = nn.InstanceNorm2d(self.half, affine=True)
        self.batch_norm = nn.BatchNorm2d(channels - self.half)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        instance, batch = x.split([self.half, x.shape[1] - self.half], dim=1)
        return torch.cat([self.instance_norm(instance.contiguous()), self.batch_norm(batch.contiguous())], dim=1)


def _block_width(block: nn.Module) -> int:
    """Output channels of a timm BasicBlock or Bottleneck."""
    return block.bn3.num_features if isinstance(block, Bottleneck) else block.bn2.num_features


def apply_ibn(model: ResNet, kind: str) -> ResNet:
    """Turns a freshly built timm ResNet into its IBN-a or IBN-b form (in place) and returns it."""
    stages = [model.layer1, model.layer2, model.layer3, model.layer4]
    if kind == "a":
        for stage in stages[:3]:
            for block in stage:
                block.bn1 = IBN(block.bn1.num_features)
    elif kind == "b":
        model.bn1 = nn.InstanceNorm2d(model.bn1.num_features, affine=True)
        for stage in stages[:2]:
            last = stage[-1]
            name = "act3" if isinstance(last, Bottleneck) else "act2"
            setattr(last, name, nn.Sequential(nn.InstanceNorm2d(_block_width(last), affine=True), getattr(last, name)))
    else:
        raise ValueError(f"IBN kind must be 'a' or 'b', got '{kind}'")
    return model


def _imagenet_resnet(block: type[nn.Module], layers: list[int], **kwargs: Any) -> ResNet:
    kwargs = drop_factory_kwargs(kwargs)
    kwargs.setdefault("zero_init_last", False)  # see DESIGN.md: keeps random baselines non-degenerate
    return ResNet(block=block, layers=layers, **kwargs)


def _ibn(kind: str | None, block: type[nn.Module], layers: list[int], cifar: bool, **kwargs: Any) -> ResNet:
    """kind "a" or "b"; None builds the plain ResNet of the same shape (the reference IBN-Net compares with)."""
    build = _cifar_resnet if cifar else _imagenet_resnet
    model = build(block, layers, **kwargs)
    return model if kind is None else apply_ibn(model, kind)


NARROW = {"channels": (16, 32, 64, 128)}  # a quarter of ResNet-18's widths, for 32 px images on a CPU


TEST_SIZE = {"channels": (8, 16, 32, 64)}


@register_model
def test_resnet_ibn_a(**kwargs: Any) -> ResNet:
    """A few-thousand-parameter IBN-a ResNet (CIFAR stem) for tests."""
    return _ibn("a", BasicBlock, [1, 1, 1, 1], True, **{**TEST_SIZE, **kwargs})


@register_model
def test_resnet_ibn_b(**kwargs: Any) -> ResNet:
    """A few-thousand-parameter IBN-b ResNet (CIFAR stem) for tests."""
    return _ibn("b", BasicBlock, [1, 2, 1, 1], True, **{**TEST_SIZE, **kwargs})


@register_model
def resnet18_ibn_a(**kwargs: Any) -> ResNet:
    return _ibn("a", BasicBlock, [2, 2, 2, 2], False, **kwargs)


@register_model
def resnet18_ibn_b(**kwargs: Any) -> ResNet:
    return _ibn("b", BasicBlock, [2, 2, 2, 2], False, **kwargs)


@register_model
def resnet50_ibn_a(**kwargs: Any) -> ResNet:
    return _ibn("a", Bottleneck, [3, 4, 6, 3], False, **kwargs)


@register_model
def resnet50_ibn_b(**kwargs: Any) -> ResNet:
    return _ibn("b", Bottleneck, [3, 4, 6, 3], False, **kwargs)


@register_model
def resnet18_ibn_a_cifar(**kwargs: Any) -> ResNet:
    return _ibn("a", BasicBlock, [2, 2, 2, 2], True, **kwargs)


@register_model
def resnet18_ibn_b_cifar(**kwargs: Any) -> ResNet:
    return _ibn("b", BasicBlock, [2, 2, 2, 2], True, **kwargs)


@register_model
def resnet50_ibn_a_cifar(**kwargs: Any) -> ResNet:
    return _ibn("a", Bottleneck, [3, 4, 6, 3], True, **kwargs)


@register_model
def resnet50_ibn_b_cifar(**kwargs: Any) -> ResNet:
    return _ibn("b", Bottleneck, [3, 4, 6, 3], True, **kwargs)


@register_model
def resnet18_ibn_a_narrow_cifar(**kwargs: Any) -> ResNet:
    """IBN-a ResNet-18 at a quarter width (16 to 128 channels), CIFAR stem."""
    return _ibn("a", BasicBlock, [2, 2, 2, 2], True, **{**NARROW, **kwargs})


@register_model
def resnet18_ibn_b_narrow_cifar(**kwargs: Any) -> ResNet:
    """IBN-b ResNet-18 at a quarter width (16 to 128 channels), CIFAR stem."""
    return _ibn("b", BasicBlock, [2, 2, 2, 2], True, **{**NARROW, **kwargs})


@register_model
def resnet18_narrow_cifar(**kwargs: Any) -> ResNet:
    """The plain ResNet-18 at a quarter width that the narrow IBN models are compared with."""
    return _ibn(None, BasicBlock, [2, 2, 2, 2], True, **{**NARROW, **kwargs})
