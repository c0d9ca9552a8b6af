"""Small-image architectures, written as timm models and registered in timm's own registry.

Importing this module makes `timm.create_model("resnet18_cifar")` and friends work anywhere.
- `tinycnn`: a 0.09M-parameter CNN that trains in minutes on 2 CPU cores.
- `resnet{18,34,50}_cifar`: timm's ResNet with the 3x3 stride-1 stem and no max-pool that
  28-64 px inputs need (a 7x7 stride-2 stem plus max-pool leaves a 1x1 map at 32 px).
- `vit_{nano,tiny,small}_patch4`: ViTs with 4x4 patches for 32 px images, mean-pooled tokens.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from timm.layers import SelectAdaptivePool2d
from timm.models import register_model
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from timm.models.vision_transformer import VisionTransformer

from pretrainlab.backbones.model_api import drop_factory_kwargs as _drop_factory_kwargs


def conv_bn_relu(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class TinyCNN(nn.Module):
    """Three 3x3 conv-BN-ReLU stages (stride 1, 2, 2), global average pooling.

    Args:
        widths: channels of the three stages; the last is the embedding size.
    """

    def __init__(self, in_chans: int = 3, num_classes: int = 1000, widths: tuple[int, ...] = (32, 64, 128),
                 global_pool: str = "avg", drop_rate: float = 0.0) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.num_features = self.head_hidden_size = widths[-1]
        self.drop_rate = drop_rate
        strides = [1] + [2] * (len(widths) - 1)
        channels = [in_chans, *widths]
        self.stages = nn.ModuleList(
            conv_bn_relu(channels[i], channels[i + 1], strides[i]) for i in range(len(widths))
        )
        self.feature_info = [
            {"num_chs": width, "reduction": 2**i, "module": f"stages.{i}"} for i, width in enumerate(widths)
        ]
        self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=True)
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str = "avg") -> None:
        self.num_classes = num_classes
        self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=True)
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_intermediates(self, x: torch.Tensor, indices: int | list[int] | None = None,
                              intermediates_only: bool = False, **_: Any) -> Any:
        """timm's intermediate-feature API: the output of every stage, (B, C_i, H_i, W_i)."""
        intermediates = []
        for stage in self.stages:
            x = stage(x)
            intermediates.append(x)
        if isinstance(indices, int):
            intermediates = intermediates[-indices:]
        elif indices is not None:
            intermediates = [intermediates[i] for i in indices]
        return intermediates if intermediates_only else (x, intermediates)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            x = stage(x)
        return x  # (B, C, H / 4, W / 4)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        if self.drop_rate > 0:
            x = nn.functional.dropout(x, self.drop_rate, self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_model
def tinycnn(**kwargs: Any) -> TinyCNN:
    return TinyCNN(**_drop_factory_kwargs(kwargs))


def _cifar_resnet(block: type[nn.Module], layers: list[int], **kwargs: Any) -> ResNet:
    """A timm ResNet whose stem is one 3x3 stride-1 conv with no max-pool (He et al. 2016, CIFAR section)."""
    kwargs = _drop_factory_kwargs(kwargs)
    kwargs.setdefault("zero_init_last", False)  # see DESIGN.md: keeps random baselines non-degenerate
    model = ResNet(block=block, layers=layers, **kwargs)
    in_chans = kwargs.get("in_chans", 3)
    stem_width = model.conv1.out_channels  # timm's plain stem is 64 wide whatever stem_width says
    model.conv1 = nn.Conv2d(in_chans, stem_width, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()
    for info in model.feature_info:  # the stem no longer downsamples by 4
        info["reduction"] = max(1, info["reduction"] // 4)
    return model


@register_model
def resnet18_cifar(**kwargs: Any) -> ResNet:
    return _cifar_resnet(BasicBlock, [2, 2, 2, 2], **kwargs)


@register_model
def resnet34_cifar(**kwargs: Any) -> ResNet:
    return _cifar_resnet(BasicBlock, [3, 4, 6, 3], **kwargs)


@register_model
def resnet50_cifar(**kwargs: Any) -> ResNet:
    return _cifar_resnet(Bottleneck, [3, 4, 6, 3], **kwargs)


def _small_vit(embed_dim: int, depth: int, num_heads: int, **kwargs: Any) -> VisionTransformer:
    kwargs = _drop_factory_kwargs(kwargs)
    kwargs.setdefault("img_size", 32)
    kwargs.setdefault("patch_size", 4)
    kwargs.setdefault("global_pool", "avg")  # mean of patch tokens: the better frozen feature on small data
    return VisionTransformer(embed_dim=embed_dim, depth=depth, num_heads=num_heads, **kwargs)


@register_model
def vit_nano_patch4(**kwargs: Any) -> VisionTransformer:
    return _small_vit(embed_dim=128, depth=4, num_heads=4, **kwargs)


@register_model
def vit_tiny_patch4(**kwargs: Any) -> VisionTransformer:
    return _small_vit(embed_dim=192, depth=12, num_heads=3, **kwargs)


@register_model
def vit_small_patch4(**kwargs: Any) -> VisionTransformer:
    return _small_vit(embed_dim=384, depth=12, num_heads=6, **kwargs)


SMALL_BACKBONES = ("tinycnn", "resnet18_cifar", "resnet34_cifar", "resnet50_cifar", "vit_nano_patch4",
                   "vit_tiny_patch4", "vit_small_patch4")
