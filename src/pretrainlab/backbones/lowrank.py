"""Low-rank versions of any timm model: every linear and convolution layer factorised into two thinner ones.

Guo, Wang, Kankanhalli, "PELA: Learning Parameter-Efficient Models with Low-Rank Approximation",
arXiv 2310.10700 (CVPR 2024). A weight W (out x in; a k x k convolution is out x (in k k)) becomes the product
of two factors through a rank r: Linear(in -> r) then Linear(r -> out), or Conv(in -> r, k x k, the original
stride) then Conv(r -> out, 1 x 1). PELA picks r = in * out / (c (in + out)) for a compression ratio c; here
`rank_ratio` = 1 / c is the share of each layer's parameters the factors keep, in (0, 1]. Layers a
factorisation would not shrink, grouped and depth-wise convolutions, and the first layer (the one reading the
image: tiny, and the most sensitive) stay as they are. The factors start from the truncated SVD with the square
root of the singular values on each side (`init_from_full`).

`pela_lowrank` is a registered timm model: `timm.create_model("pela_lowrank", base="resnet18_cifar",
rank_ratio=0.5, **base_kwargs)` builds the base model and factorises it (the ranks follow from the shapes and
the ratio), so a compressed run's `backbone.safetensors` loads with timm alone like any other export.
"""

from __future__ import annotations

from typing import Any

import timm
import torch
import torch.nn as nn
from timm.models import register_model

from pretrainlab.backbones.adapter import Backbone
from pretrainlab.backbones.model_api import drop_factory_kwargs

LOW_RANK_MODEL = "pela_lowrank"


def check_rank_ratio(rank_ratio: float) -> None:
    if not 0 < rank_ratio <= 1:
        raise ValueError(f"rank ratio must be in (0, 1] (the share of each layer's parameters kept), got {rank_ratio}")


def low_rank(fan_in: int, fan_out: int, rank_ratio: float) -> int:
    """The rank whose two factors hold `rank_ratio` of the fan_in x fan_out weight's parameters."""
    return int(rank_ratio * fan_in * fan_out / (fan_in + fan_out))


class LowRankLinear(nn.Sequential):
    """Linear(in -> rank, no bias) then Linear(rank -> out, with the original bias)."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool) -> None:
        super().__init__(nn.Linear(in_features, rank, bias=False), nn.Linear(rank, out_features, bias=bias))
        self.in_features, self.out_features = in_features, out_features

    def product(self) -> torch.Tensor:
        """The full weight the factors represent: (out, in)."""
        return self[1].weight @ self[0].weight


class LowRankConv2d(nn.Sequential):
    """Conv(in -> rank, k x k, the original stride and padding, no bias) then Conv(rank -> out, 1 x 1, bias)."""

    def __init__(self, conv: nn.Conv2d, rank: int) -> None:
        super().__init__(
            nn.Conv2d(conv.in_channels, rank, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                      bias=False, padding_mode=conv.padding_mode),
            nn.Conv2d(rank, conv.out_channels, 1, bias=conv.bias is not None))
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels

    def product(self) -> torch.Tensor:
        """The full weight the factors represent, flattened: (out, in k k)."""
        return self[1].weight.flatten(1) @ self[0].weight.flatten(1)


def _replacement(module: nn.Module, rank_ratio: float) -> nn.Module | None:
    if isinstance(module, nn.Linear):
        rank = low_rank(module.in_features, module.out_features, rank_ratio)
        if rank >= 1 and rank * (module.in_features + module.out_features) < module.in_features * module.out_features:
            return LowRankLinear(module.in_features, module.out_features, rank, module.bias is not None)
    elif isinstance(module, nn.Conv2d) and module.groups == 1:
        fan_in = module.in_channels * module.kernel_size[0] * module.kernel_size[1]
        rank = low_rank(fan_in, module.out_channels, rank_ratio)
        if rank >= 1 and rank * fan_in + rank * module.out_channels < fan_in * module.out_channels:
            return LowRankConv2d(module, rank)
    return None


def factorise_(model: nn.Module, rank_ratio: float) -> list[str]:
    """Replaces the model's linear and convolution layers by low-rank pairs, in place; returns their names."""
    check_rank_ratio(rank_ratio)
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    replaced = []
    for name, module in layers[1:]:  # the first layer reads the image and stays full rank
        replacement = _replacement(module, rank_ratio)
        if replacement is None:
            continue
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, replacement)
        replaced.append(name)
    return replaced


@torch.no_grad()
def init_from_full(student: nn.Module, teacher: nn.Module) -> None:
    """Copies the full model's tensors into its low-rank version; factors from the truncated SVD, sqrt(S) each side."""
    own = student.state_dict()
    student.load_state_dict({k: v for k, v in teacher.state_dict().items() if k in own and own[k].shape == v.shape},
                            strict=False)
    full = dict(teacher.named_modules())
    for name, module in student.named_modules():
        if not isinstance(module, (LowRankLinear, LowRankConv2d)):
            continue
        original = full[name]
        u, s, vh = torch.linalg.svd(original.weight.flatten(1).float(), full_matrices=False)
        rank = module[0].weight.shape[0]
        root = s[:rank].sqrt()
        module[0].weight.copy_((root[:, None] * vh[:rank]).reshape(module[0].weight.shape))
        module[1].weight.copy_((u[:, :rank] * root[None, :]).reshape(module[1].weight.shape))
        if original.bias is not None:
            module[1].bias.copy_(original.bias)


def low_rank_layers(model: nn.Module) -> dict[str, LowRankLinear | LowRankConv2d]:
    return {name: m for name, m in model.named_modules() if isinstance(m, (LowRankLinear, LowRankConv2d))}


@register_model
def pela_lowrank(base: str = "resnet18_cifar", rank_ratio: float = 0.5, **kwargs: Any) -> nn.Module:
    """timm model `base` (built with the remaining kwargs) with its layers factorised at `rank_ratio`."""
    check_rank_ratio(rank_ratio)
    if base == LOW_RANK_MODEL:
        raise ValueError("the base of a low-rank model cannot itself be low-rank; factorise the original model")
    model = timm.create_model(base, **drop_factory_kwargs(kwargs))
    factorise_(model, rank_ratio)
    return model


def low_rank_backbone(backbone: Backbone, rank_ratio: float) -> Backbone:
    """A fresh `pela_lowrank` Backbone of `backbone`'s architecture (weights untrained: see `init_from_full`)."""
    kwargs = {"base": backbone.name, "rank_ratio": rank_ratio, **backbone.create_kwargs}
    return Backbone(timm.create_model(LOW_RANK_MODEL, **kwargs), LOW_RANK_MODEL, kwargs)
