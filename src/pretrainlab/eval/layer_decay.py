"""Layer-wise learning-rate decay for fine-tuning, as in MAE's fine-tuning recipe.

He, Chen, Xie, Li, Dollar, Girshick, "Masked Autoencoders Are Scalable Vision Learners",
arXiv 2111.06377 (after BEiT, arXiv 2106.08254): the patch embedding and tokens form layer 0,
transformer block i is layer i + 1, the final norm and the classifier the top layer L; a
parameter of layer l learns at lr * decay ** (L - l), so early layers, which hold the most
general features, move least.

The layers come from timm's own `group_matcher` of the timm model inside the backbone, so the
backbone may be wrapped (a SimCLRv2 head's middle layer): parameters outside the timm model, and
the fresh classifier, are in the top layer.
"""

from __future__ import annotations

from typing import Any

import torch.nn as nn
from timm.models import group_parameters

from pretrainlab.errors import PretrainlabError

VIT_DEFAULT_DECAY = 0.75  # MAE's value for ViT-B; ViT-L/H use 0.75/0.65 with deeper stacks


def find_timm_model(module: nn.Module) -> tuple[str, nn.Module] | None:
    """The first submodule (prefix, module) that declares timm's `group_matcher`, or None."""
    for name, submodule in module.named_modules():
        if hasattr(submodule, "group_matcher"):
            return name, submodule
    return None


def is_transformer(module: nn.Module) -> bool:
    found = find_timm_model(module)
    return found is not None and hasattr(found[1], "blocks") and hasattr(found[1], "patch_embed")


def default_layer_decay(module: nn.Module) -> float:
    """MAE's 0.75 for vision transformers; 1.0 (no decay) otherwise, since the recipe is a ViT one."""
    return VIT_DEFAULT_DECAY if is_transformer(module) else 1.0


def layer_ids(model: nn.Module) -> tuple[dict[str, int], int]:
    """Parameter name -> layer id for every trainable parameter of `model`, and the top layer id."""
    found = find_timm_model(model)
    if found is None:
        return {name: 0 for name, _ in model.named_parameters()}, 0
    prefix, timm_model = found
    prefix = f"{prefix}." if prefix else ""
    inner = group_parameters(timm_model, timm_model.group_matcher(coarse=False), reverse=True)
    top = max(inner.values())  # timm maps a ViT's final norm above the last block, as MAE's top layer
    ids = {}
    for name, _ in model.named_parameters():
        relative = name[len(prefix):] if name.startswith(prefix) else None
        ids[name] = inner.get(relative, top) if relative is not None else top
    return ids, top


def check_layer_decay(value: object) -> float:
    """`value` as a decay factor in (0, 1], else PretrainlabError."""
    try:
        decay = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        decay = float("nan")
    if isinstance(value, bool) or not 0 < decay <= 1:
        raise PretrainlabError(f"layer_decay must be a number in (0, 1] (1: no decay; MAE uses 0.75), got {value!r}")
    return decay


def layer_decay_groups(model: nn.Module, weight_decay: float, layer_decay: float) -> list[dict[str, Any]]:
    """Optimiser groups with `lr_scale` = layer_decay ** (top - layer); no weight decay on biases, norms, tokens.

    `train.optim.set_learning_rate` multiplies each group's learning rate by its `lr_scale`.
    """
    check_layer_decay(layer_decay)
    ids, top = layer_ids(model)
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        plain = parameter.ndim <= 1 or name.endswith(("token", "pos_embed"))
        key = (ids[name], plain)
        if key not in groups:
            groups[key] = {"params": [], "weight_decay": 0.0 if plain else weight_decay,
                           "lr_scale": layer_decay ** (top - ids[name]), "layer": ids[name]}
        groups[key]["params"].append(parameter)
    return [groups[key] for key in sorted(groups)]
