"""SimSiam: a Siamese network with a predictor and a stop-gradient, no negatives and no momentum encoder.

Chen, He, "Exploring Simple Siamese Representation Learning", arXiv 2011.10566.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pretrainlab.backbones import Backbone
from pretrainlab.data.views import ViewSpec
from pretrainlab.heads import ProjectionHead
from pretrainlab.losses import NegativeCosineSimilarity
from pretrainlab.methods.base import Batch, Method, MethodContext, ViewOptions, register_method
from pretrainlab.methods.parts.view_presets import SIMSIAM_VIEW


@dataclass(frozen=True)
class SimSiamConfig:
    """Args:
        projection_dim: projector output size (2048).
        projection_layers: Linear layers of the projector (3 on ImageNet, 2 on CIFAR in the paper).
        prediction_hidden_dim: the predictor's bottleneck (512, a quarter of the output).
        views: the symmetric augmentation of both views (MoCo v2's).
    """

    projection_dim: int = 2048
    projection_layers: int = 3
    prediction_hidden_dim: int = 512
    views: ViewOptions = SIMSIAM_VIEW


@register_method("simsiam")
class SimSiam(Method):
    """loss = D(p1, stopgrad(z2)) / 2 + D(p2, stopgrad(z1)) / 2, D the negative cosine similarity (in [-1, 1])."""

    config_class = SimSiamConfig
    example_options = {"projection_dim": 64, "prediction_hidden_dim": 16}

    def __init__(self, backbone: Backbone, config: SimSiamConfig, context: MethodContext) -> None:
        super().__init__(backbone, config, context)
        dim = config.projection_dim
        # Batch norm on every projector layer, the output's without affine parameters (the official code).
        self.projector = ProjectionHead(backbone.embed_dim, dim, dim, config.projection_layers, last_batch_norm=True)
        self.predictor = ProjectionHead(dim, config.prediction_hidden_dim, dim, 2)
        self.criterion = NegativeCosineSimilarity()

    def view_specs(self) -> dict[str, ViewSpec]:
        return {"global": self.config.views.spec(self.context.img_size, count=2)}

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        first, second = (view.images for view in batch.views["global"])
        projection_1 = self.projector(self.backbone.pooled(first))  # (B, projection_dim)
        projection_2 = self.projector(self.backbone.pooled(second))
        prediction_1, prediction_2 = self.predictor(projection_1), self.predictor(projection_2)
        loss = (self.criterion(prediction_1, projection_2) + self.criterion(prediction_2, projection_1)) / 2
        # The spread of normalised projections: near 0 means collapse to a constant (the paper's figure 2).
        spread = torch.nn.functional.normalize(projection_1.detach(), dim=1).std(dim=0).mean()
        return {"loss": loss, "projection_std": spread}

    def representations(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.backbone.pooled(images)
        heads = {f"head.{index}": output for index, output in enumerate(self.projector.hidden_outputs(features))}
        return {"backbone": features, **heads}
