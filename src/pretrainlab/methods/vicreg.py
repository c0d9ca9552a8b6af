"""VICReg: invariance between two views, with variance and covariance terms that prevent collapse.

Bardes, Ponce, LeCun, "VICReg: Variance-Invariance-Covariance Regularization for Self-Supervised
Learning", arXiv 2105.04906.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from pretrainlab.backbones import Backbone
from pretrainlab.data.views import ViewSpec
from pretrainlab.heads import ProjectionHead
from pretrainlab.losses import VICRegLoss
from pretrainlab.methods.base import Batch, Method, MethodContext, ViewOptions, register_method


@dataclass(frozen=True)
class VICRegConfig:
    """Args:
        invariance_weight: lambda (25 in the paper).
        variance_weight: mu (25 in the paper).
        covariance_weight: nu (1 in the paper).
        projection_dim: expander output size (8192 on ImageNet; 2048 on CIFAR-sized data).
        hidden_dim: expander hidden width (the backbone width when 0).
        projection_layers: Linear layers of the expander (3 in the paper, BN + ReLU between them).
    """

    invariance_weight: float = 25.0
    variance_weight: float = 25.0
    covariance_weight: float = 1.0
    projection_dim: int = 2048
    hidden_dim: int = 2048
    projection_layers: int = 3
    views: ViewOptions = field(default_factory=ViewOptions)

    def __post_init__(self) -> None:
        if min(self.invariance_weight, self.variance_weight, self.covariance_weight) < 0:
            raise ValueError("invariance_weight, variance_weight and covariance_weight must be >= 0")
        if min(self.projection_dim, self.hidden_dim + 1, self.projection_layers) < 1:
            raise ValueError("projection_dim and projection_layers must be >= 1, hidden_dim >= 0")


@register_method("vicreg")
class VICReg(Method):
    """Two views through backbone f and expander h; the three VICReg terms act on the expander outputs."""

    config_class = VICRegConfig
    example_options = {"hidden_dim": 64, "projection_dim": 32}

    def __init__(self, backbone: Backbone, config: VICRegConfig, context: MethodContext) -> None:
        super().__init__(backbone, config, context)
        hidden = config.hidden_dim or backbone.embed_dim
        self.projection = ProjectionHead(backbone.embed_dim, hidden, config.projection_dim, config.projection_layers)
        self.criterion = VICRegLoss(config.invariance_weight, config.variance_weight, config.covariance_weight)

    def view_specs(self) -> dict[str, ViewSpec]:
        return {"global": self.config.views.spec(self.context.img_size, count=2)}

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        view_a, view_b = batch.views["global"]
        # Each view is its own pass, as in the official code: batch norm statistics are per view.
        z_a = self.projection(self.backbone.pooled(view_a.images))  # (B, projection_dim)
        z_b = self.projection(self.backbone.pooled(view_b.images))
        terms = self.criterion.terms(z_a, z_b)
        return {"loss": self.criterion.combine(terms), **{name: value.detach() for name, value in terms.items()}}
