"""What an explanation explains: a backbone, optionally with a linear classifier, and the layer to look at.

A pre-trained backbone has no classifier, so gradient-based maps explain backbone + the project's linear
probe (eval/linear.py) fitted on the data; the probe's standardisation is folded into one `nn.Linear`, so
the explained model is an ordinary module (B, C, H, W) -> logits (B, K). Layers are named as in
`backbone.model.named_modules()`; transformer token sequences are reshaped to their patch grid, inferred
from the input size and patch size, prefix (class, register) tokens dropped.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

from pretrainlab.backbones import Backbone
from pretrainlab.errors import PretrainlabError
from pretrainlab.eval.linear import LinearProbe

MIN_CAM_GRID = 4  # the default CAM layer is the deepest whose map is at least this many cells a side


class ProbedBackbone(nn.Module):
    """backbone.pooled followed by a linear head: images (B, C, H, W) -> logits (B, K)."""

    def __init__(self, backbone: Backbone, head: nn.Linear) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone.pooled(x))


class PooledBackbone(nn.Module):
    """The bare backbone as a module (B, C, H, W) -> (B, D): what gradient-free maps (Eigen-CAM) explain."""

    def __init__(self, backbone: Backbone) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.pooled(x)


def probe_as_linear(probe: LinearProbe) -> nn.Linear:
    """A fitted probe (standardise, then weight (D, K), bias (K,)) as one Linear layer D -> K."""
    scale = 1.0 / probe.std  # (D,)
    weight = (probe.weight.double() * scale[:, None]).T  # (K, D)
    bias = probe.bias.double() - (probe.mean * scale) @ probe.weight.double()  # (K,)
    linear = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        linear.weight.copy_(weight.float())
        linear.bias.copy_(bias.float())
    return linear


def named_layers(backbone: Backbone) -> dict[str, nn.Module]:
    """The layers a user may name: every submodule of the timm model, by its dotted name."""
    return {name: module for name, module in backbone.model.named_modules() if name}


def layer_suggestions(backbone: Backbone) -> list[str]:
    """A short list of sensible layer names for error messages: stages of a CNN, blocks of a transformer."""
    if backbone.has_tokens:
        return [f"blocks.{index}" for index in range(len(backbone.model.blocks))]
    return [str(info["module"]) for info in getattr(backbone.model, "feature_info", [])]


def resolve_layer(backbone: Backbone, name: str) -> nn.Module:
    layers = named_layers(backbone)
    if name not in layers:
        raise PretrainlabError(f"backbone '{backbone.name}' has no layer '{name}'; valid layers include "
                               f"{', '.join(layer_suggestions(backbone))} (any name of model.named_modules())")
    return layers[name]


@torch.no_grad()
def default_cam_layer(backbone: Backbone, example: torch.Tensor) -> str:
    """The layer CAMs look at by default.

    CNN: the deepest stage whose map is at least MIN_CAM_GRID cells a side (resnet18 at 32 px ends in a 1x1
    map, on which every CAM is constant). Transformer: the last block's first norm, whose tokens feed the
    last attention (the choice of pytorch-grad-cam's ViT tutorial).
    """
    if backbone.has_tokens:
        return f"blocks.{len(backbone.model.blocks) - 1}.norm1"
    infos = getattr(backbone.model, "feature_info", None)
    if not infos:
        raise PretrainlabError(f"backbone '{backbone.name}' declares no feature stages; pass --layer NAME")
    maps = backbone.feature_maps(example[:1])
    stages = [str(info["module"]) for info in infos]
    for name, feature_map in zip(reversed(stages), reversed(maps[-len(stages):]), strict=False):
        if min(feature_map.shape[-2:]) >= MIN_CAM_GRID:
            return name
    return stages[0]


def token_grid(backbone: Backbone, height: int, width: int) -> tuple[int, int]:
    """The patch grid (rows, cols) of an input of (height, width) pixels."""
    patch = backbone.model.patch_embed.patch_size
    return height // int(patch[0]), width // int(patch[1])


def token_reshape(backbone: Backbone, height: int, width: int) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """For transformers, tokens (B, P + N, D) -> maps (B, D, rows, cols) with prefix tokens dropped; None for CNNs."""
    if not backbone.has_tokens:
        return None
    rows, cols = token_grid(backbone, height, width)
    prefix = backbone.num_prefix_tokens

    def reshape(tokens: torch.Tensor) -> torch.Tensor:
        if tokens.ndim == 4:  # layers that already return (B, rows, cols, D)
            return tokens.permute(0, 3, 1, 2)
        patches = tokens[:, prefix:]  # (B, N, D)
        if patches.shape[1] != rows * cols:
            raise PretrainlabError(f"layer gives {patches.shape[1]} patch tokens, but a {height}x{width} input has "
                                   f"a {rows}x{cols} grid; choose a transformer block layer")
        return patches.reshape(patches.shape[0], rows, cols, -1).permute(0, 3, 1, 2)

    return reshape


def layer_activations(model: nn.Module, layer: nn.Module, x: torch.Tensor,
                      reshape: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """The output of `layer` while `model` runs on x, as maps (B, C, h, w) (tokens reshaped)."""
    captured: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda _m, _i, output: captured.append(output))
    try:
        model(x)
    finally:
        handle.remove()
    out = captured[0]
    return reshape(out) if reshape is not None else out


def has_relu_modules(module: nn.Module) -> bool:
    """Guided backprop and DeconvNet change the backward pass of ReLU modules; without any they are the gradient."""
    return any(isinstance(m, nn.ReLU) for m in module.modules())


def representation_names(backbone: Backbone, count: int) -> list[str]:
    """Names of the `count` outputs of `backbone.feature_maps`: timm's stage modules, or blocks.i for transformers."""
    if backbone.has_tokens and count == len(backbone.model.blocks):
        return [f"blocks.{index}" for index in range(count)]
    stages = [str(info["module"]) for info in getattr(backbone.model, "feature_info", [])]
    return stages[-count:] if len(stages) >= count else [f"map{index}" for index in range(count)]


def representations(backbone: Backbone, x: torch.Tensor) -> list[torch.Tensor]:
    """Every intermediate output (timm's forward_intermediates) and the pooled features, for similarity."""
    return [*backbone.feature_maps(x), backbone.pooled(x)]
