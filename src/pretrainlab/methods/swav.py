"""SwAV: swap the cluster assignments (codes) of two views and predict each from the other.

Caron, Misra, Mairal, Goyal, Bojanowski, Joulin, "Unsupervised Learning of Visual Features by Contrasting
Cluster Assignments", arXiv 2006.09882.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from pretrainlab.backbones import Backbone
from pretrainlab.backbones.vit_parts import pooled_any_size
from pretrainlab.data.views import ViewSpec
from pretrainlab.distributed import world_size
from pretrainlab.heads import ProjectionHead, Prototypes
from pretrainlab.losses import SwAVLoss
from pretrainlab.methods.base import Batch, Method, MethodContext, ViewOptions, register_method
from pretrainlab.methods.parts.local_views import local_view_side
from pretrainlab.methods.parts.queue import MemoryQueue


@dataclass(frozen=True)
class SwAVConfig:
    """Args:
        prototypes: number of prototypes K (3000 in the paper).
        temperature: softmax temperature of the predictions (0.1).
        epsilon: Sinkhorn entropy regularisation (0.05).
        sinkhorn_iterations: 3 in the paper.
        projection_dim: size of the normalised embedding the prototypes score (128).
        hidden_dim: projector hidden width (2048; the backbone width when 0).
        projection_layers: Linear layers of the projector (2).
        global_crop_scale: crop scale range of the two full-size views ((0.14, 1) with multi-crop).
        local_views: number of small multi-crop views (6 in the paper; 0 turns multi-crop off).
        local_size: side of the local views in px (0: 96/224 of the training size, the paper's ratio).
        local_crop_scale: crop scale range of the local views ((0.05, 0.14)).
        freeze_prototypes_epochs: the prototypes get no gradient for this many epochs (1 in the paper).
        queue_size: embeddings of past batches used in the equal partition (3840 for batches of 256; 0: off).
        queue_start_epoch: the queue is filled from this epoch on (15 in the paper), and used once it is full
            (as the official code: a partly filled queue would weigh a few past batches heavily).
    """

    prototypes: int = 3000
    temperature: float = 0.1
    epsilon: float = 0.05
    sinkhorn_iterations: int = 3
    projection_dim: int = 128
    hidden_dim: int = 2048
    projection_layers: int = 2
    global_crop_scale: tuple[float, float] = (0.14, 1.0)
    local_views: int = 6
    local_size: int = 0
    local_crop_scale: tuple[float, float] = (0.05, 0.14)
    freeze_prototypes_epochs: float = 1.0
    queue_size: int = 0
    queue_start_epoch: float = 15.0
    views: ViewOptions = field(default_factory=ViewOptions)

    def __post_init__(self) -> None:
        if self.local_views < 0 or self.queue_size < 0 or self.local_size < 0:
            raise ValueError("local_views, local_size and queue_size must be >= 0")
        if self.freeze_prototypes_epochs < 0 or self.queue_start_epoch < 0:
            raise ValueError("freeze_prototypes_epochs and queue_start_epoch must be >= 0")


@register_method("swav")
class SwAV(Method):
    """Backbone -> projector -> L2 normalise -> prototypes; codes of each global view predicted from the rest."""

    config_class = SwAVConfig
    local_view_count_option = "local_views"
    example_options = {"hidden_dim": 64, "projection_dim": 32, "prototypes": 20, "local_views": 2,
                       "queue_size": 32, "queue_start_epoch": 0.0}

    def __init__(self, backbone: Backbone, config: SwAVConfig, context: MethodContext) -> None:
        super().__init__(backbone, config, context)
        hidden = config.hidden_dim or backbone.embed_dim
        self.projection = ProjectionHead(backbone.embed_dim, hidden, config.projection_dim, config.projection_layers)
        self.prototypes = Prototypes(config.projection_dim, config.prototypes)
        self.criterion = SwAVLoss(config.temperature, config.epsilon, config.sinkhorn_iterations)
        # One queue per global view, as in the paper: each view's codes are partitioned with its own history.
        self.queues = nn.ModuleList(
            MemoryQueue(config.queue_size, config.projection_dim) for _ in range(2 if config.queue_size else 0)
        )
        # Images seen in training (all ranks), so epoch-based switches survive checkpoints and accumulation.
        self.register_buffer("images_seen", torch.zeros((), dtype=torch.long))

    def local_size(self) -> int:
        return local_view_side(self.config.local_size, self.context.img_size)

    def view_specs(self) -> dict[str, ViewSpec]:
        views = self.config.views
        specs = {"global": views.spec(self.context.img_size, count=2, crop_scale=self.config.global_crop_scale)}
        if self.config.local_views:
            specs["local"] = views.spec(self.local_size(), count=self.config.local_views,
                                        crop_scale=self.config.local_crop_scale)
        return specs

    def epoch(self) -> float:
        """Training progress in epochs, from the images seen so far."""
        return float(self.images_seen) / max(1, self.context.dataset_size)

    def embed(self, groups: list[torch.Tensor]) -> torch.Tensor:
        """Same-size image groups (n_i, C, S_i, S_i) -> unit-norm embeddings (sum n_i, projection_dim).

        The backbone runs once per resolution; the projector runs once on all of them, so its BatchNorm
        sees every view together as in the paper's multi-crop forward.
        """
        features = [pooled_any_size(self.backbone, images) for images in groups]  # [(n_i, D)]
        return F.normalize(self.projection(torch.cat(features)), dim=1)

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        global_views = [view.images for view in batch.views["global"]]
        local_views = [view.images for view in batch.views.get("local", [])]
        size = global_views[0].shape[0]
        groups = [torch.cat(global_views)] + ([torch.cat(local_views)] if local_views else [])
        z = self.embed(groups)  # (V B, projection_dim), global views first
        frozen = self.epoch() < self.config.freeze_prototypes_epochs
        scores = self.prototypes(z, frozen=frozen).split(size)  # V x (B, K)
        global_scores, local_scores = list(scores[:2]), list(scores[2:])
        queue_scores = self.queue_scores(z[: 2 * size].detach().split(size))
        loss = self.criterion(global_scores, local_scores, queue_scores)
        if self.training:
            self.images_seen += size * world_size()
        return {"loss": loss, "prototypes_frozen": torch.tensor(float(frozen)),
                "queue_used": torch.tensor(float(queue_scores[0] is not None))}

    @torch.no_grad()
    def queue_scores(self, global_embeddings: tuple[torch.Tensor, ...]) -> list[torch.Tensor | None]:
        """Scores of each global view's queued embeddings (None until its queue is full, as the official code),
        then enqueues this batch's embeddings."""
        if not self.queues or self.epoch() < self.config.queue_start_epoch:
            return [None] * len(global_embeddings)
        weight = self.prototypes.weight.detach()
        scores = [queue.items @ weight.T if queue.full() else None for queue in self.queues]  # (M, K)
        if self.training:
            for queue, embeddings in zip(self.queues, global_embeddings, strict=True):
                queue.push(embeddings)
        return scores

    def on_step_end(self, step: int, total_steps: int) -> None:
        self.prototypes.normalize_()
