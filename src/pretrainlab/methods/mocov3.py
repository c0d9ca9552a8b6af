"""MoCo v3: a symmetric contrastive loss between a predictor's queries and momentum keys of the same batch.

Chen, Xie, He, "An Empirical Study of Training Self-Supervised Vision Transformers", arXiv 2104.02057.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from pretrainlab.backbones import Backbone
from pretrainlab.data.views import ViewSpec
from pretrainlab.heads import ProjectionHead
from pretrainlab.losses import InfoNCELoss
from pretrainlab.methods.base import Batch, Method, MethodContext, ViewOptions, register_method
from pretrainlab.methods.parts.momentum import MomentumTeacher
from pretrainlab.methods.parts.view_presets import BYOL_FIRST_VIEW, BYOL_SECOND_VIEW


@dataclass(frozen=True)
class MoCoV3Config:
    """Args:
        temperature: InfoNCE temperature (0.2 for ViTs, 1.0 for ResNets in the paper).
        momentum: base momentum, raised to 1 on a cosine schedule (0.99 in the paper).
        projection_dim: output size of projector and predictor (256).
        hidden_dim: hidden width of projector and predictor (4096).
        projection_layers: Linear layers of the projector; 0 chooses the paper's: 3 for ViTs, 2 for CNNs.
        freeze_patch_embed: keep the ViT's random patch projection fixed (section 4.2: it removes the
            training instability that shows as dips in accuracy); ignored for CNNs.
        views, second_views: the two asymmetric augmentations (BYOL's).
    """

    temperature: float = 0.2
    momentum: float = 0.99
    projection_dim: int = 256
    hidden_dim: int = 4096
    projection_layers: int = 0
    freeze_patch_embed: bool = True
    views: ViewOptions = BYOL_FIRST_VIEW
    second_views: ViewOptions = BYOL_SECOND_VIEW

    def __post_init__(self) -> None:
        if not 0 <= self.momentum <= 1 or self.projection_layers < 0:
            raise ValueError(f"need 0 <= momentum <= 1 and projection_layers >= 0, got {self.momentum}, "
                             f"{self.projection_layers}")


@register_method("mocov3")
class MoCoV3(Method):
    """Base encoder = backbone + projector + predictor; momentum encoder = EMA of backbone + projector.

    loss = ctr(q1, k2) + ctr(q2, k1), each an InfoNCE over the keys of the whole global batch, scaled by
    2 * temperature as in the paper's pseudo-code.
    """

    config_class = MoCoV3Config
    example_options = {"hidden_dim": 64, "projection_dim": 32}

    def __init__(self, backbone: Backbone, config: MoCoV3Config, context: MethodContext) -> None:
        super().__init__(backbone, config, context)
        layers = config.projection_layers or (3 if backbone.has_tokens else 2)
        dim, hidden = config.projection_dim, config.hidden_dim
        # Batch norm after every layer including the last (affine-free), per the paper's MLP heads.
        self.projector = ProjectionHead(backbone.embed_dim, hidden, dim, layers, last_batch_norm=True)
        self.predictor = ProjectionHead(dim, hidden, dim, 2)
        if config.freeze_patch_embed and backbone.has_tokens:
            for parameter in backbone.model.patch_embed.parameters():
                parameter.requires_grad_(False)
        self.momentum_encoder = MomentumTeacher(self.base_encoder(), config.momentum)
        self.criterion = InfoNCELoss(config.temperature)

    def base_encoder(self) -> nn.ModuleDict:
        """The modules the momentum encoder follows, in the same order."""
        return nn.ModuleDict({"backbone": self.backbone, "projector": self.projector})

    def view_specs(self) -> dict[str, ViewSpec]:
        size = self.context.img_size
        return {"global": self.config.views.spec(size), "global_second": self.config.second_views.spec(size)}

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        first, second = batch.views["global"][0].images, batch.views["global_second"][0].images
        # Each view is its own forward pass, so batch norm statistics are per view as in the paper.
        query_1 = self.predictor(self.projector(self.backbone.pooled(first)))  # (B, projection_dim)
        query_2 = self.predictor(self.projector(self.backbone.pooled(second)))
        with torch.no_grad():
            key_1 = self.momentum_encoder["projector"](self.momentum_encoder["backbone"].pooled(first))
            key_2 = self.momentum_encoder["projector"](self.momentum_encoder["backbone"].pooled(second))
        scale = 2 * self.config.temperature
        loss = scale * (self.criterion(query_1, key_2) + self.criterion(query_2, key_1))
        return {"loss": loss, "momentum": torch.tensor(self.momentum_encoder.momentum)}

    def representations(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.backbone.pooled(images)
        heads = {f"head.{index}": output for index, output in enumerate(self.projector.hidden_outputs(features))}
        return {"backbone": features, **heads}

    def on_step_end(self, step: int, total_steps: int) -> None:
        self.momentum_encoder.follow(self.base_encoder(), step, total_steps)
