"""SimCLR: contrast two augmented views of each image against the rest of the batch.

Chen, Kornblith, Norouzi, Hinton, "A Simple Framework for Contrastive Learning of Visual
Representations", arXiv 2002.05709.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from pretrainlab.backbones import Backbone
from pretrainlab.data.views import ViewSpec
from pretrainlab.heads import ProjectionHead
from pretrainlab.losses import NTXentLoss
from pretrainlab.methods.base import Batch, Method, MethodContext, ViewOptions, register_method


@dataclass(frozen=True)
class SimCLRConfig:
    """Args:
        temperature: NT-Xent temperature (0.5 for CIFAR-sized data in the paper).
        projection_dim: output size of the projection head g(.) (128 in the paper).
        hidden_dim: hidden width of g(.) (2048 in the paper; the backbone width when 0).
        projection_layers: Linear layers in g(.) (2 in SimCLR, 3 in SimCLRv2).
    """

    temperature: float = 0.5
    projection_dim: int = 128
    hidden_dim: int = 2048
    projection_layers: int = 2
    views: ViewOptions = field(default_factory=ViewOptions)


@register_method("simclr")
class SimCLR(Method):
    """Two views x_i, x_j of each image; the loss pulls g(f(x_i)) towards g(f(x_j)) against the 2N - 2 others."""

    config_class = SimCLRConfig
    example_options = {"hidden_dim": 64, "projection_dim": 32}
    # crops of at least 20 px a side: scale 0.51 on 28-px digits, 0.39 at 32 px, the paper's 0.08 from 71 px up
    # (issue 9: on builtin, tinycnn 87.0 % kNN at (0.08, 1) against 88.8 at (0.5, 1); resnet18 at lr 0.3 over
    # 12 epochs 89.2 at (0.2, 1) against 95.1 at (0.5, 1); docs/resnet_recipes.md)
    small_image_crop_side = 20

    def __init__(self, backbone: Backbone, config: SimCLRConfig, context: MethodContext) -> None:
        super().__init__(backbone, config, context)
        hidden = config.hidden_dim or backbone.embed_dim
        self.projection = ProjectionHead(backbone.embed_dim, hidden, config.projection_dim, config.projection_layers)
        self.criterion = NTXentLoss(config.temperature)

    def view_specs(self) -> dict[str, ViewSpec]:
        return {"global": self.config.views.spec(self.context.img_size, count=2)}

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        view_a, view_b = batch.views["global"]
        both = torch.cat([view_a.images, view_b.images])  # one pass: (2B, C, S, S)
        z_a, z_b = self.projection(self.backbone.pooled(both)).chunk(2)  # (B, projection_dim) each
        return {"loss": self.criterion(z_a, z_b)}
