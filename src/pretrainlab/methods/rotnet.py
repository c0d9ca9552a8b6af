"""RotNet: predict which of four rotations (0, 90, 180, 270 degrees) was applied to an image.

Gidaris, Singh, Komodakis, "Unsupervised Representation Learning by Predicting Image Rotations",
arXiv 1803.07728.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from pretrainlab.backbones import Backbone
from pretrainlab.data.views import ViewSpec
from pretrainlab.methods.base import Batch, Method, MethodContext, register_method


@dataclass(frozen=True)
class RotNetConfig:
    """Args:
        hidden_dim: hidden width of the rotation classifier (0: a linear classifier).
        crop_min_scale: lower bound of the random-resized-crop scale applied before rotating.
    """

    hidden_dim: int = 512
    crop_min_scale: float = 0.5


def rotate_all_four(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, C, S, S) -> every image at 0/90/180/270 degrees (4B, C, S, S) and rotation labels (4B,).

    The paper found feeding all four rotations of an image in the same batch works best.
    """
    rotated = torch.cat([torch.rot90(images, k, dims=(2, 3)) for k in range(4)])
    labels = torch.arange(4, device=images.device).repeat_interleave(images.shape[0])
    return rotated, labels


@register_method("rotnet")
class RotNet(Method):
    """A 4-way classifier on the backbone's pooled features, trained with cross-entropy."""

    config_class = RotNetConfig
    example_options = {"hidden_dim": 32}

    def __init__(self, backbone: Backbone, config: RotNetConfig, context: MethodContext) -> None:
        super().__init__(backbone, config, context)
        if config.hidden_dim > 0:
            self.classifier = nn.Sequential(
                nn.Linear(backbone.embed_dim, config.hidden_dim), nn.BatchNorm1d(config.hidden_dim),
                nn.ReLU(inplace=True), nn.Linear(config.hidden_dim, 4),
            )
        else:
            self.classifier = nn.Linear(backbone.embed_dim, 4)

    def view_specs(self) -> dict[str, ViewSpec]:
        # Only geometry-preserving augmentation: a mild crop and flip, no colour changes.
        return {"base": ViewSpec(self.context.img_size, crop_scale=(self.config.crop_min_scale, 1.0), jitter_p=0.0,
                                 grayscale_p=0.0)}

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        rotated, targets = rotate_all_four(batch.views["base"][0].images)
        logits = self.classifier(self.backbone.pooled(rotated))  # (4B, 4)
        accuracy = (logits.argmax(dim=1) == targets).float().mean()
        return {"loss": F.cross_entropy(logits, targets), "rotation_accuracy": accuracy.detach()}
