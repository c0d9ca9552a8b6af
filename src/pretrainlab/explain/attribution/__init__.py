"""Attribution maps by name: the CAM family (pytorch-grad-cam), gradient methods (Captum) and RISE (own).

`attribution_maps(name, explained, inputs, classes)` returns (N, H, W) maps in [0, 1] for every method, so the
quality metrics (explain/quality.py) score them all alike.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from pretrainlab.errors import PretrainlabError, unknown_name_message
from pretrainlab.explain.attribution.cam import CAM_CLASSES, GRADIENT_FREE, cam_maps
from pretrainlab.explain.attribution.gradients import GRADIENT_METHODS, RELU_METHODS, gradient_maps
from pretrainlab.explain.attribution.rise import rise_maps
from pretrainlab.explain.model import has_relu_modules


@dataclass
class Explained:
    """What a map is computed on.

    Args:
        classifier: images (B, C, H, W) -> logits (B, K); None when the data has no classes.
        backbone_module: images -> pooled features (B, D), for class-free maps (Eigen-CAM).
        layer: the module CAMs weigh; reshape: tokens -> maps for transformers (None for CNNs).
        rise_masks: random masks RISE draws; seed: their seed.
    """

    classifier: nn.Module | None
    backbone_module: nn.Module
    layer: nn.Module
    reshape: Callable[[torch.Tensor], torch.Tensor] | None = None
    rise_masks: int = 512
    seed: int = 0


CAM_METHODS = tuple(CAM_CLASSES)
OTHER_METHODS = (*GRADIENT_METHODS, "rise")
ALL_METHODS = (*CAM_METHODS, *OTHER_METHODS)


def not_applicable(method: str, explained: Explained) -> str | None:
    """Why `method` cannot explain this model (None: it can)."""
    if method not in ALL_METHODS:
        raise PretrainlabError(unknown_name_message("attribution method", method, ALL_METHODS))
    if explained.classifier is None and method not in GRADIENT_FREE:
        return "needs a class to explain (the data has no labels); eigencam needs none"
    if method in RELU_METHODS and not has_relu_modules(explained.backbone_module):
        return "changes how ReLU modules pass gradients back, and this network has none (it would equal saliency)"
    return None


def attribution_maps(method: str, explained: Explained, inputs: torch.Tensor, classes: np.ndarray,
                     batch_size: int = 16) -> np.ndarray:
    """(N, H, W) maps in [0, 1] of `method` for inputs (N, C, H, W) and the explained classes (N,)."""
    if (reason := not_applicable(method, explained)) is not None:
        raise PretrainlabError(f"attribution method '{method}' {reason}")
    if method in GRADIENT_FREE:
        return cam_maps(explained.backbone_module, explained.layer, inputs, None, method, explained.reshape, batch_size)
    if method in CAM_CLASSES:
        return cam_maps(explained.classifier, explained.layer, inputs, classes, method, explained.reshape, batch_size)
    if method == "rise":
        return rise_maps(explained.classifier, inputs, classes, explained.rise_masks, seed=explained.seed)
    return gradient_maps(explained.classifier, inputs, classes, method, batch_size)


__all__ = ["ALL_METHODS", "CAM_METHODS", "OTHER_METHODS", "Explained", "attribution_maps", "not_applicable"]
