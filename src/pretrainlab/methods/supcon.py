"""SupCon: contrastive pre-training where every view of the same class is a positive.

Khosla, Teterwak, Wang, Sarna, Tian, Isola, Maschinot, Liu, Krishnan, "Supervised Contrastive Learning",
arXiv 2004.11362.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from pretrainlab.backbones import Backbone
from pretrainlab.data.views import ViewSpec
from pretrainlab.errors import PretrainlabError
from pretrainlab.heads import ProjectionHead
from pretrainlab.losses import SupConLoss
from pretrainlab.methods.base import Batch, Method, MethodContext, ViewOptions, register_method


@dataclass(frozen=True)
class SupConConfig:
    """Args:
        temperature: tau of the loss (0.1 in the paper).
        projection_dim: output size of the projection MLP (128).
        hidden_dim: hidden width of the projection MLP (2048; the backbone width when 0).
        projection_layers: Linear layers of the projection MLP (2).
        view_count: augmented views per image (2 in the paper).
    """

    temperature: float = 0.1
    projection_dim: int = 128
    hidden_dim: int = 2048
    projection_layers: int = 2
    view_count: int = 2
    views: ViewOptions = field(default_factory=lambda: ViewOptions(crop_min_scale=0.2))

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.view_count < 1:
            raise ValueError(f"view_count must be >= 1, got {self.view_count}")


@register_method("supcon")
class SupCon(Method):
    """Views of a labelled batch through backbone and projector; same-label views attract, all others repel."""

    config_class = SupConConfig
    needs_labels = True
    example_options = {"hidden_dim": 64, "projection_dim": 32}

    def __init__(self, backbone: Backbone, config: SupConConfig, context: MethodContext) -> None:
        super().__init__(backbone, config, context)
        hidden = config.hidden_dim or backbone.embed_dim
        self.projection = ProjectionHead(backbone.embed_dim, hidden, config.projection_dim, config.projection_layers)
        self.criterion = SupConLoss(config.temperature)

    def view_specs(self) -> dict[str, ViewSpec]:
        return {"global": self.config.views.spec(self.context.img_size, count=self.config.view_count)}

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        if batch.labels is None:
            raise PretrainlabError("supcon trains with labels, but the batch has none; use a labelled dataset")
        views = [view.images for view in batch.views["global"]]
        z = self.projection(self.backbone.pooled(torch.cat(views)))  # (V B, projection_dim)
        features = torch.stack(z.chunk(len(views)), dim=1)  # (B, V, projection_dim)
        return {"loss": self.criterion(features, batch.labels)}
