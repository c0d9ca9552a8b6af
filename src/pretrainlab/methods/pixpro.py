"""PixPro: pixel-to-propagation consistency between the overlapping region of two crops.

Xie, Lin, Zhang, Cao, Lin, Hu, "Propagate Yourself: Exploring Pixel-Level Consistency for Unsupervised
Visual Representation Learning", arXiv 2011.10043.

The online network (backbone, 1x1-conv projector, pixel propagation module) sees one view; a momentum
copy of backbone and projector sees the other. Every pair of feature-map pixels whose centres fall within
`distance_threshold` bins of each other in the source image must agree: the propagated online feature
of one with the momentum feature of the other (2 - 2 cos), in both directions. The crop boxes carried by
the views (`Views.boxes`, `Views.flipped`) locate the pixels. An optional instance branch (the paper's
"PixPro + instance", BYOL-style on pooled maps) adds a global term with weight `instance_weight`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from pretrainlab.backbones import Backbone
from pretrainlab.data.views import ViewSpec
from pretrainlab.errors import PretrainlabError
from pretrainlab.heads.pixel_propagation import ConvProjectionHead, PixelPropagation
from pretrainlab.losses.pixel_matching import pixel_consistency_loss, pixel_match_mask
from pretrainlab.methods.base import Batch, Method, MethodContext, ViewOptions, register_method
from pretrainlab.methods.parts.momentum import MomentumTeacher


@dataclass(frozen=True)
class PixProConfig:
    """Args:
        projection_dim: channels of the projected feature map (256 in the paper).
        hidden_dim: hidden channels of the projector (4096 in the paper; smaller for small backbones).
        distance_threshold: positive pairs lie closer than this many feature-map bins (0.7 in the paper).
        sharpness: gamma of the propagation similarity (2 in the paper).
        transform_layers: depth of the PPM's transform g (1 in the paper).
        momentum: base momentum of the momentum encoder, raised to 1 on a cosine schedule (0.99).
        instance_weight: weight of the instance-level BYOL-style branch (0: pixel-level only, as the
            paper's main PixPro).
        views: augmentations; the paper uses BYOL's with crop scale 0.08-1 at 224 px. At 28-32 px the
            feature map is 7x7 or 8x8, and a 0.2 lower bound keeps most view pairs overlapping.
    """

    projection_dim: int = 128
    hidden_dim: int = 512
    distance_threshold: float = 0.7
    sharpness: float = 2.0
    transform_layers: int = 1
    momentum: float = 0.99
    instance_weight: float = 0.0
    views: ViewOptions = field(default_factory=lambda: ViewOptions(crop_min_scale=0.2))

    def __post_init__(self) -> None:
        if self.distance_threshold <= 0:
            raise PretrainlabError(f"pixpro distance_threshold must be > 0 (0.7 in the paper), got "
                                   f"{self.distance_threshold}")
        if not 0 <= self.momentum < 1:
            raise PretrainlabError(f"pixpro momentum must be in [0, 1), got {self.momentum}")
        if self.instance_weight < 0:
            raise PretrainlabError(f"pixpro instance_weight must be >= 0, got {self.instance_weight}")
        if self.transform_layers not in (0, 1, 2) or self.sharpness <= 0:
            raise PretrainlabError("pixpro transform_layers must be 0, 1 or 2 and sharpness > 0, got "
                                   f"{self.transform_layers} and {self.sharpness}")


def last_feature_map(backbone: Backbone, images: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) images -> the deepest feature map (B, C', h, w)."""
    return backbone.feature_maps(images)[-1]


@register_method("pixpro")
class PixPro(Method):
    """Pixel-level consistency with a momentum encoder, on the backbone's last feature map."""

    config_class = PixProConfig
    example_options = {"hidden_dim": 32, "projection_dim": 16}

    def __init__(self, backbone: Backbone, config: PixProConfig, context: MethodContext) -> None:
        super().__init__(backbone, config, context)
        with torch.no_grad():
            probe = torch.zeros(2, context.in_chans, context.img_size, context.img_size)
            was_training = backbone.training
            channels = last_feature_map(backbone.eval(), probe).shape[1]
            backbone.train(was_training)
        self.projector = ConvProjectionHead(channels, config.hidden_dim, config.projection_dim)
        self.propagation = PixelPropagation(config.projection_dim, config.sharpness, config.transform_layers)
        if config.instance_weight > 0:
            self.instance_projector = ConvProjectionHead(channels, config.hidden_dim, config.projection_dim)
            self.instance_predictor = ConvProjectionHead(config.projection_dim, config.hidden_dim,
                                                         config.projection_dim)
        self.momentum_encoder = MomentumTeacher(self.online(), config.momentum)

    def online(self) -> dict[str, nn.Module]:
        """The modules the momentum encoder follows: backbone, projector (and the instance branch's projector)."""
        parts = {"backbone": self.backbone, "projector": self.projector}
        if self.config.instance_weight > 0:
            parts["instance_projector"] = self.instance_projector
        return parts

    def view_specs(self) -> dict[str, ViewSpec]:
        return {"global": self.config.views.spec(self.context.img_size, count=2)}

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        view_a, view_b = batch.views["global"]
        # Each view is its own pass through both encoders, as in the official code: batch norm statistics are
        # per view, never pooled over the two.
        maps = [last_feature_map(self.backbone, view.images) for view in (view_a, view_b)]  # 2 x (B, C', h, w)
        propagated_a, propagated_b = (self.propagation(self.projector(m)) for m in maps)  # (B, P, h, w) each
        with torch.no_grad():
            teacher = self.momentum_encoder
            momentum_maps = [last_feature_map(teacher["backbone"], view.images) for view in (view_a, view_b)]
            target_a, target_b = (teacher["projector"](m) for m in momentum_maps)
        height, width = maps[0].shape[-2:]
        matches = pixel_match_mask(view_a.boxes, view_a.flipped, view_b.boxes, view_b.flipped, height, width,
                                   self.config.distance_threshold)  # (B, N, N); B -> A is its transpose
        pixel_loss = (pixel_consistency_loss(propagated_a, target_b, matches)
                      + pixel_consistency_loss(propagated_b, target_a, matches.transpose(1, 2)))
        outputs = {"pixel_loss": pixel_loss.detach(),
                   "overlapping_views": matches.flatten(1).any(dim=1).float().mean()}
        loss = pixel_loss
        if self.config.instance_weight > 0:
            instance_loss = self.instance_loss(maps, momentum_maps)
            outputs["instance_loss"] = instance_loss.detach()
            loss = loss + self.config.instance_weight * instance_loss
        outputs["loss"] = loss
        return outputs

    def instance_loss(self, maps: list[torch.Tensor], momentum_maps: list[torch.Tensor]) -> torch.Tensor:
        """BYOL-style agreement of pooled projections across the two views: per-view maps (B, C', h, w) -> scalar."""
        prediction_a, prediction_b = (F.normalize(self.instance_predictor(self.instance_projector(m)).mean(dim=(2, 3)),
                                                  dim=1) for m in maps)  # (B, P) each
        with torch.no_grad():
            target_a, target_b = (F.normalize(self.momentum_encoder["instance_projector"](m).mean(dim=(2, 3)), dim=1)
                                  for m in momentum_maps)
        agreement = (prediction_a * target_b).sum(dim=1) + (prediction_b * target_a).sum(dim=1)  # (B,)
        return (4.0 - 2.0 * agreement).mean()  # 2 - 2 cos, summed over both directions

    def on_step_end(self, step: int, total_steps: int) -> None:
        self.momentum_encoder.follow(self.online(), step, total_steps)
