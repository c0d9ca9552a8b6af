"""COMET: an inherently explainable classifier, a selector that masks the image and a predictor that sees only
what it keeps, with a completeness term from a frozen detector.

Zhang, Lee and Wang, "Comprehensive Attribution: Inherently Explainable Vision Model with Feature Detector",
ECCV 2024, arXiv 2407.19308. With mask m = S(x) in [0, 1] and q the fill value (0: the mean colour of
normalised images), x_s = m x + (1 - m) q and x_{1-s} = (1 - m) x + m q, the objective is

    L(x) = L_P(x_s) - a L_D(x_{1-s}) + b R(m)

L_P: the predictor's classification loss on what the selector keeps (sufficiency); L_D: the frozen detector's
loss on what the selector left out, maximised so nothing discriminative stays outside the mask (completeness: the
detector, trained on full images, breaks the "interlocking" of a selector that picks noise and a predictor that
fits it); R: the mask's mean area (conciseness). Here L_D is capped at the loss of an uninformed prediction
(log K, or log 2 per label), so the selector cannot profit from driving the detector into confident mistakes.

Selector: a copy of the backbone, its `selector_stage` feature map, a 1x1 convolution and a sigmoid, upsampled to
the input; predictor: another copy with a linear head; detector: the frozen backbone with the project's linear
probe (explain/context.py) fitted on full images. Single-label (cross-entropy) or multi-label (binary
cross-entropy, composed: canvases) alike.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from pretrainlab.backbones import Backbone


@dataclass(frozen=True)
class COMETSettings:
    """completeness (a), area (b), epochs, batch_size, lr (AdamW, cosine), selector_stage (index into feature_maps)."""

    completeness: float = 1.0
    area: float = 0.5
    epochs: int = 3
    batch_size: int = 64
    lr: float = 5e-4
    weight_decay: float = 0.05
    selector_stage: int = -1


class Selector(nn.Module):
    """images (B, C, H, W) -> mask (B, 1, H, W) in [0, 1]."""

    def __init__(self, backbone: Backbone, stage: int, channels: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.stage = stage
        self.score = nn.Conv2d(channels, 1, kernel_size=1)
        nn.init.zeros_(self.score.weight)
        nn.init.constant_(self.score.bias, 2.0)  # start by keeping almost everything (sigmoid(2) = 0.88)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.backbone.feature_maps(x)[self.stage]  # (B, C_s, h, w)
        logits = self.score(maps)
        return torch.sigmoid(F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False))


class COMET(nn.Module):
    """Selector, predictor and frozen detector. forward(x) -> (predictor logits on x_s (B, K), mask (B, 1, H, W))."""

    def __init__(self, backbone: Backbone, detector: nn.Module, num_classes: int, multilabel: bool,
                 settings: COMETSettings, example: torch.Tensor) -> None:
        super().__init__()
        with torch.no_grad():
            channels = backbone.feature_maps(example[:1])[settings.selector_stage].shape[1]
        self.selector = Selector(copy.deepcopy(backbone), settings.selector_stage, channels)
        self.predictor_backbone = copy.deepcopy(backbone)
        self.predictor_head = nn.Linear(backbone.embed_dim, num_classes)
        self.detector = detector
        for parameter in self.detector.parameters():
            parameter.requires_grad_(False)
        self.multilabel = multilabel
        self.num_classes = num_classes
        self.settings = settings

    def train(self, mode: bool = True) -> COMET:
        super().train(mode)
        self.detector.eval()  # frozen: its batch-norm statistics too
        return self

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.predictor_head(self.predictor_backbone.pooled(x))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = self.selector(x)
        return self.predict(x * mask), mask

    def classification_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.multilabel:
            return F.binary_cross_entropy_with_logits(logits, targets.float())
        return F.cross_entropy(logits, targets)

    def uninformed_loss(self) -> float:
        return math.log(2) if self.multilabel else math.log(self.num_classes)

    def loss(self, x: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """The COMET objective on a batch x (B, C, H, W) with labels (B,) or multi-hot (B, K); fill value q = 0."""
        logits, mask = self(x)
        sufficiency = self.classification_loss(logits, targets)
        left_out = self.classification_loss(self.detector(x * (1 - mask)), targets)
        completeness = left_out.clamp(max=self.uninformed_loss())
        area = mask.mean()
        total = sufficiency - self.settings.completeness * completeness + self.settings.area * area
        return {"loss": total, "sufficiency": sufficiency.detach(), "completeness": completeness.detach(),
                "area": area.detach()}


def train_comet(model: COMET, inputs: torch.Tensor, targets: torch.Tensor, seed: int = 0) -> list[float]:
    """Trains selector and predictor on normalised inputs (N, C, H, W) with targets; returns the loss per epoch."""
    settings = model.settings
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=settings.lr, weight_decay=settings.weight_decay)
    steps_per_epoch = max(1, len(inputs) // settings.batch_size)
    total = steps_per_epoch * settings.epochs
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, total)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    history = []
    for _ in range(settings.epochs):
        order = torch.randperm(len(inputs), generator=generator)
        losses = []
        for step in range(steps_per_epoch):
            chosen = order[step * settings.batch_size : (step + 1) * settings.batch_size].to(inputs.device)
            outputs = model.loss(inputs[chosen], targets[chosen])
            optimizer.zero_grad()
            outputs["loss"].backward()
            optimizer.step()
            scheduler.step()
            losses.append(float(outputs["loss"].detach()))
        history.append(sum(losses) / len(losses))
    model.eval()
    return history
