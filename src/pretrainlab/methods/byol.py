"""BYOL: an online network predicts a slowly moving target network's projection of another view.

Grill et al., "Bootstrap Your Own Latent: A New Approach to Self-Supervised Learning", arXiv 2006.07733.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from pretrainlab.backbones import Backbone
from pretrainlab.data.views import ViewSpec
from pretrainlab.heads import ProjectionHead
from pretrainlab.losses import NegativeCosineSimilarity
from pretrainlab.methods.base import Batch, Method, MethodContext, ViewOptions, register_method
from pretrainlab.methods.parts.momentum import MomentumTeacher
from pretrainlab.methods.parts.view_presets import BYOL_FIRST_VIEW, BYOL_SECOND_VIEW


@dataclass(frozen=True)
class BYOLConfig:
    """Args:
        momentum: base target decay tau, raised to 1 on a cosine schedule (0.996 in the paper; 0.99 for
            short runs, as in small-data benchmarks).
        projection_dim: projection and prediction size (256).
        hidden_dim: hidden width of projector and predictor (4096).
        views, second_views: the two asymmetric augmentations of the paper's table 6.
    """

    momentum: float = 0.996
    projection_dim: int = 256
    hidden_dim: int = 4096
    views: ViewOptions = BYOL_FIRST_VIEW
    second_views: ViewOptions = BYOL_SECOND_VIEW

    def __post_init__(self) -> None:
        if not 0 <= self.momentum <= 1:
            raise ValueError(f"momentum must be in [0, 1], got {self.momentum}")


@register_method("byol")
class BYOL(Method):
    """Online: backbone, projector g, predictor q; target: EMA of backbone and projector.

    The loss is the paper's symmetrised L + L~, each 2 - 2 cos(q(g(f(v))), g'(f'(v'))) in [0, 4].
    """

    config_class = BYOLConfig
    example_options = {"hidden_dim": 64, "projection_dim": 32}

    def __init__(self, backbone: Backbone, config: BYOLConfig, context: MethodContext) -> None:
        super().__init__(backbone, config, context)
        dim, hidden = config.projection_dim, config.hidden_dim
        self.projector = ProjectionHead(backbone.embed_dim, hidden, dim, 2)  # Linear-BN-ReLU-Linear
        self.predictor = ProjectionHead(dim, hidden, dim, 2)
        self.target = MomentumTeacher(self.online(), config.momentum)
        self.criterion = NegativeCosineSimilarity()

    def online(self) -> nn.ModuleDict:
        """The online modules the target follows, in the same order."""
        return nn.ModuleDict({"backbone": self.backbone, "projector": self.projector})

    def view_specs(self) -> dict[str, ViewSpec]:
        size = self.context.img_size
        return {"global": self.config.views.spec(size), "global_second": self.config.second_views.spec(size)}

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        first, second = batch.views["global"][0].images, batch.views["global_second"][0].images
        prediction_1 = self.predictor(self.projector(self.backbone.pooled(first)))  # (B, projection_dim)
        prediction_2 = self.predictor(self.projector(self.backbone.pooled(second)))
        with torch.no_grad():
            target_1 = self.target["projector"](self.target["backbone"].pooled(first))
            target_2 = self.target["projector"](self.target["backbone"].pooled(second))
        # 2 - 2 cos = 2 + 2 * (negative cosine similarity), for each direction.
        loss = 4 + 2 * (self.criterion(prediction_1, target_2) + self.criterion(prediction_2, target_1))
        return {"loss": loss, "momentum": torch.tensor(self.target.momentum)}

    def representations(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.backbone.pooled(images)
        heads = {f"head.{index}": output for index, output in enumerate(self.projector.hidden_outputs(features))}
        return {"backbone": features, **heads}

    def on_step_end(self, step: int, total_steps: int) -> None:
        self.target.follow(self.online(), step, total_steps)
