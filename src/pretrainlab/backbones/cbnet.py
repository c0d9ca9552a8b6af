"""CBNet: a composite backbone of K identical CNNs, each feeding its stages' outputs to the next one.

Liu, Wang, Liang, Chen, Tang, Yang, "CBNet: A Novel Composite Backbone Network Architecture for Object
Detection", arXiv 1909.03625 (AAAI 2020).

K copies of one backbone run side by side; with Adjacent Higher-Level Composition (AHLC) the input of stage l
of backbone k is its own previous stage's output plus a composite connection g from the *same* stage of
backbone k - 1 (one level higher than that input):
    x_l^k = F_l^k(x_{l-1}^k + g(x_l^{k-1})),   g = 1x1 conv + BN, then nearest upsampling to x_{l-1}^k's size.
The last backbone is the lead: its stage outputs are the feature maps a detector (or `pretrainlab eval
--protocol dense`) uses, and `pooled` averages its last map. The assistants only feed it, so every stage of
every copy is trained. The copies are timm ResNets (any timm ResNet: resnet*, the *_cifar and IBN ones), run
stage by stage through their public modules; their state dicts sit under `backbones.K`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models import register_model
from timm.models._features import feature_take_indices
from timm.models.resnet import BasicBlock, Bottleneck, ResNet

from pretrainlab.backbones.model_api import ClassifierMixin, drop_factory_kwargs
from pretrainlab.backbones.small import _cifar_resnet

STAGES = ("layer1", "layer2", "layer3", "layer4")


def stage_widths(model: ResNet) -> list[int]:
    """Channels of the stem output and of each stage's output."""
    widths = [model.bn1.num_features]
    for name in STAGES:
        last = getattr(model, name)[-1]
        widths.append((last.bn3 if isinstance(last, Bottleneck) else last.bn2).num_features)
    return widths


class CompositeBackbone(ClassifierMixin, nn.Module):
    """K ResNets with AHLC composite connections; the last one leads.

    Args:
        make_backbone: builds one copy (a timm ResNet with no classifier).
        composites: K, the number of copies (2: Dual-, 3: Triple-Backbone in the paper).
    """

    def __init__(self, make_backbone: Callable[[], ResNet], composites: int = 2, num_classes: int = 1000,
                 global_pool: str = "avg", drop_rate: float = 0.0) -> None:
        super().__init__()
        if composites < 2:
            raise ValueError(f"a composite backbone needs at least 2 copies, got {composites}")
        self.backbones = nn.ModuleList(make_backbone() for _ in range(composites))
        widths = stage_widths(self.backbones[0])
        # composites[k][l]: from stage l of backbone k to the input of stage l of backbone k + 1
        self.composites = nn.ModuleList(
            nn.ModuleList(nn.Sequential(nn.Conv2d(widths[l + 1], widths[l], 1, bias=False), nn.BatchNorm2d(widths[l]))
                          for l in range(len(STAGES)))
            for _ in range(composites - 1))
        lead = self.backbones[-1]
        self.feature_info = [dict(info, module=f"backbones.{composites - 1}.{info['module']}")
                             for info in lead.feature_info if info["module"] in STAGES]
        self.init_classifier(widths[-1], num_classes, global_pool, drop_rate)

    @staticmethod
    def stem(backbone: ResNet, x: torch.Tensor) -> torch.Tensor:
        return backbone.maxpool(backbone.act1(backbone.bn1(backbone.conv1(x))))

    def lead_stages(self, x: torch.Tensor, count: int = len(STAGES)) -> list[torch.Tensor]:
        """(B, C, H, W) -> the lead backbone's first `count` stage outputs, assistants composed in."""
        previous: list[torch.Tensor] | None = None
        for index, backbone in enumerate(self.backbones):
            is_lead = index == len(self.backbones) - 1
            h = self.stem(backbone, x)
            outputs = []
            for level, name in enumerate(STAGES[: count if is_lead else len(STAGES)]):
                if previous is not None:
                    g = self.composites[index - 1][level](previous[level])
                    h = h + F.interpolate(g, size=h.shape[-2:], mode="nearest")
                h = getattr(backbone, name)(h)
                outputs.append(h)
            previous = outputs
        return previous

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> the lead's last map (B, C_4, H / 32, W / 32)."""
        return self.lead_stages(x)[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(self, x: torch.Tensor, indices: int | list[int] | None = None,
                              stop_early: bool = False, output_fmt: str = "NCHW", intermediates_only: bool = False,
                              **_: Any) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """The lead backbone's stage outputs (B, C_l, H_l, W_l): the detection feature pyramid."""
        take, last = feature_take_indices(len(STAGES), indices)
        outputs = self.lead_stages(x, last + 1 if (stop_early or intermediates_only) else len(STAGES))
        intermediates = [outputs[i] for i in take]
        return intermediates if intermediates_only else (outputs[-1], intermediates)


def _composite(block: type[nn.Module], layers: list[int], cifar: bool, composites: int = 2,
               **kwargs: Any) -> CompositeBackbone:
    kwargs = drop_factory_kwargs(kwargs)
    head = {key: kwargs.pop(key) for key in ("num_classes", "global_pool", "drop_rate") if key in kwargs}
    kwargs.setdefault("zero_init_last", False)  # see DESIGN.md: keeps random baselines non-degenerate

    def make_backbone() -> ResNet:
        if cifar:
            return _cifar_resnet(block, layers, num_classes=0, **kwargs)
        return ResNet(block=block, layers=layers, num_classes=0, **kwargs)

    return CompositeBackbone(make_backbone, composites, **head)


@register_model
def test_cbnet(**kwargs: Any) -> CompositeBackbone:
    """Two tiny ResNets (CIFAR stem) for tests."""
    return _composite(BasicBlock, [1, 1, 1, 1], True, **{"channels": (8, 16, 32, 64), **kwargs})


@register_model
def cbnet_resnet18_cifar(**kwargs: Any) -> CompositeBackbone:
    """Dual-ResNet-18 with the CIFAR stem."""
    return _composite(BasicBlock, [2, 2, 2, 2], True, **kwargs)


@register_model
def cbnet_resnet50(**kwargs: Any) -> CompositeBackbone:
    """Dual-ResNet-50, the paper's smallest composite backbone."""
    return _composite(Bottleneck, [3, 4, 6, 3], False, **kwargs)


@register_model
def cbnet_resnet18_narrow_cifar(**kwargs: Any) -> CompositeBackbone:
    """Dual-ResNet-18 at a quarter width (16 to 128 channels), CIFAR stem: for 32 px images on a CPU."""
    return _composite(BasicBlock, [2, 2, 2, 2], True, **{"channels": (16, 32, 64, 128), **kwargs})
