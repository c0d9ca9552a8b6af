"""Supervised pre-training: cross-entropy of a linear classifier on the pooled features, with labels.

The plain supervised baseline of every self-supervised paper, and the supervised member of composed
multi-task pre-training ("Heuristic Vision Pre-Training with Self-Supervised and Supervised Multi-Task
Learning", arXiv 2310.07510).

`--option label_noise=0.2 --option noise=symmetric|asymmetric` pre-trains on noisy labels, as in NMTune
("Understanding and Mitigating the Label Noise in Pre-training on Downstream Tasks", Chen et al., arXiv
2309.17002): that share of every class's training labels is replaced once, before training, by a
seed-fixed draw (data/label_noise.py: symmetric = uniformly among the other classes, asymmetric = the
next class); the run's config.yaml records the rate, kind, seed and how many labels changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from pretrainlab.backbones import Backbone
from pretrainlab.data.label_noise import noisy_labels
from pretrainlab.data.views import ViewSpec
from pretrainlab.errors import PretrainlabError
from pretrainlab.methods.base import Batch, Method, MethodContext, register_method


@dataclass(frozen=True)
class SupervisedConfig:
    """Args:
        label_smoothing: cross-entropy label smoothing (0.1 is the ImageNet habit; 0 here).
        crop_min_scale: random-resized-crop lower bound; flips are on, colours untouched.
        label_noise: share of every class's training labels replaced before training, in [0, 1); 0: clean.
        noise: "symmetric" (another class, uniformly) or "asymmetric" (the next class, c -> c + 1 mod K).
        noise_seed: the seed of the draw, so every run with the same options sees the same noisy labels.
    """

    label_smoothing: float = 0.0
    crop_min_scale: float = 0.35
    label_noise: float = 0.0
    noise: str = "symmetric"
    noise_seed: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.label_smoothing < 1:
            raise PretrainlabError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if not 0 <= self.label_noise < 1:
            raise PretrainlabError(f"label_noise must be in [0, 1) (the share of training labels replaced), "
                                   f"got {self.label_noise}")
        if self.noise not in NOISE_KINDS:
            raise PretrainlabError(f"noise must be one of {', '.join(NOISE_KINDS)}, got {self.noise!r}")


NOISE_KINDS = {"symmetric": "sym", "asymmetric": "asym"}  # option value -> data/label_noise.py's kind


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

    def training_labels(self, labels: np.ndarray | None) -> tuple[np.ndarray | None, dict[str, Any]]:
        """The clean labels, or with `label_noise` > 0 a noisy copy fixed by `noise_seed`, and what was done."""
        if labels is None or self.config.label_noise == 0:
            return labels, {}
        kind = NOISE_KINDS[self.config.noise]
        noisy = noisy_labels(labels, kind, self.config.label_noise, self.context.num_classes, self.config.noise_seed)
        changed = int((noisy != labels).sum())
        return noisy, {"label_noise": {"rate": self.config.label_noise, "kind": self.config.noise,
                                       "seed": self.config.noise_seed, "changed_labels": changed,
                                       "changed_share": changed / len(labels)}}

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        if batch.labels is None:
            raise PretrainlabError("method 'supervised' got a batch without labels; use a labelled dataset")
        logits = self.classifier(self.backbone.pooled(batch.views["base"][0].images))  # (B, classes)
        accuracy = (logits.argmax(dim=1) == batch.labels).float().mean()
        loss = F.cross_entropy(logits, batch.labels, label_smoothing=self.config.label_smoothing)
        return {"loss": loss, "train_accuracy": accuracy.detach()}
