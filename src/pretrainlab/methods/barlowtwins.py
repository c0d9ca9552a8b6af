"""Barlow Twins: make the cross-correlation of two views' embeddings close to the identity.

Zbontar, Jing, Misra, LeCun, Deny, "Barlow Twins: Self-Supervised Learning via Redundancy Reduction",
arXiv 2103.03230.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from pretrainlab.backbones import Backbone
from pretrainlab.data.views import ViewSpec
from pretrainlab.heads import ProjectionHead
from pretrainlab.losses import BarlowTwinsLoss
from pretrainlab.methods.base import Batch, Method, MethodContext, ViewOptions, register_method


@dataclass(frozen=True)
class BarlowTwinsConfig:
    """Args:
        off_diagonal_weight: lambda, the weight of the redundancy-reduction term (0.0051 in the paper).
        loss_scale: a factor on the whole loss (1 in the paper; 0.1 in solo-learn's CIFAR recipe).
        projection_dim: output size of the projector (8192 on ImageNet; 2048 on CIFAR-sized data).
        hidden_dim: hidden width of the projector (the backbone width when 0).
        projection_layers: Linear layers of the projector (3 in the paper, BN + ReLU between them).
    """

    off_diagonal_weight: float = 0.0051
    loss_scale: float = 1.0
    projection_dim: int = 2048
    hidden_dim: int = 2048
    projection_layers: int = 3
    views: ViewOptions = field(default_factory=ViewOptions)

    def __post_init__(self) -> None:
        if min(self.projection_dim, self.hidden_dim + 1, self.projection_layers) < 1:
            raise ValueError("projection_dim and projection_layers must be >= 1, hidden_dim >= 0")


@register_method("barlowtwins")
class BarlowTwins(Method):
    """Two views through backbone f and projector g; the loss acts on the cross-correlation of g(f(x))."""

    config_class = BarlowTwinsConfig
    example_options = {"hidden_dim": 64, "projection_dim": 32}

    def __init__(self, backbone: Backbone, config: BarlowTwinsConfig, context: MethodContext) -> None:
        super().__init__(backbone, config, context)
        hidden = config.hidden_dim or backbone.embed_dim
        # The paper's projector ends with a plain Linear: the loss batch-normalises its output itself.
        self.projection = ProjectionHead(backbone.embed_dim, hidden, config.projection_dim, config.projection_layers)
        self.criterion = BarlowTwinsLoss(config.off_diagonal_weight, config.loss_scale)

    def view_specs(self) -> dict[str, ViewSpec]:
        return {"global": self.config.views.spec(self.context.img_size, count=2)}

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        view_a, view_b = batch.views["global"]
        # Each view is its own pass, as in the official code: batch norm statistics (backbone and projector)
        # are per view, never pooled over both.
        z_a = self.projection(self.backbone.pooled(view_a.images))  # (B, projection_dim)
        z_b = self.projection(self.backbone.pooled(view_b.images))
        terms = self.criterion.terms(z_a, z_b)
        return {"loss": self.criterion.combine(terms), **{name: value.detach() for name, value in terms.items()}}
