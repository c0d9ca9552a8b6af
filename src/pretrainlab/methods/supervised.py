"""Supervised pre-training: cross-entropy of a linear classifier on the pooled features, with labels.

The plain supervised baseline of every self-supervised paper, and the supervised member of composed
multi-task pre-training ("Heuristic Vision Pre-Training with Self-Supervised and Supervised Multi-Task
Learning", arXiv 2310.07510).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from pretrainlab.backbones import Backbone
from pretrainlab.data.views import ViewSpec
from pretrainlab.errors import PretrainlabError
from pretrainlab.methods.base import Batch, Method, MethodContext, register_method


@dataclass(frozen=True)
class SupervisedConfig:
    """Args:
        label_smoothing: cross-entropy label smoothing (0.1 is the ImageNet habit; 0 here).
        crop_min_scale: random-resized-crop lower bound; flips are on, colours untouched.
    """

    label_smoothing: float = 0.0
    crop_min_scale: float = 0.35

    def __post_init__(self) -> None:
        if not 0 <= self.label_smoothing < 1:
            raise PretrainlabError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")


@register_method("supervised")
class Supervised(Method):
    """A linear head on `backbone.pooled`, trained with the dataset's labels."""

    config_class = SupervisedConfig
    needs_labels = True

    def __init__(self, backbone: Backbone, config: SupervisedConfig, context: MethodContext) -> None:
        super().__init__(backbone, config, context)
        self.classifier = nn.Linear(backbone.embed_dim, context.num_classes)

    def view_specs(self) -> dict[str, ViewSpec]:
        return {"base": ViewSpec(self.context.img_size, crop_scale=(self.config.crop_min_scale, 1.0), jitter_p=0.0,
                                 grayscale_p=0.0)}

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        if batch.labels is None:
            raise PretrainlabError("method 'supervised' got a batch without labels; use a labelled dataset")
        logits = self.classifier(self.backbone.pooled(batch.views["base"][0].images))  # (B, classes)
        accuracy = (logits.argmax(dim=1) == batch.labels).float().mean()
        loss = F.cross_entropy(logits, batch.labels, label_smoothing=self.config.label_smoothing)
        return {"loss": loss, "train_accuracy": accuracy.detach()}
