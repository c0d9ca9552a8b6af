"""LOOK: supervised pre-training with a leave-one-out k-nearest-neighbour loss that keeps intra-class modes.

Feng, Jiang, Tang, Jin, Gao, "Rethinking Supervised Pre-training for Better Downstream Transferring",
arXiv 2110.06014.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from pretrainlab.backbones import Backbone
from pretrainlab.data.views import ViewSpec
from pretrainlab.distributed import gather_no_grad, gather_with_grad, rank
from pretrainlab.errors import PretrainlabError
from pretrainlab.heads import ProjectionHead
from pretrainlab.losses import LeaveOneOutKNNLoss
from pretrainlab.methods.base import Batch, Method, MethodContext, ViewOptions, register_method
from pretrainlab.methods.parts.labelled_queue import LabelledMemoryQueue


@dataclass(frozen=True)
class LOOKConfig:
    """Args:
        neighbours: k, the neighbours that vote for an image's label.
        temperature: tau of the vote weights exp(cosine / tau).
        memory_size: labelled embeddings of past batches the neighbours are drawn from (with the current batch).
        projection_dim: size of the embedding the kNN runs on.
        hidden_dim: hidden width of the projection MLP (the backbone width when 0).
        projection_layers: Linear layers of the projection MLP.
    """

    neighbours: int = 100
    temperature: float = 0.1
    memory_size: int = 4096
    projection_dim: int = 128
    hidden_dim: int = 2048
    projection_layers: int = 2
    # Supervised pre-training's usual augmentation: random-resized crop and flip, no colour changes.
    views: ViewOptions = field(default_factory=lambda: ViewOptions(jitter_strength=0.0, grayscale_p=0.0))

    def __post_init__(self) -> None:
        if self.neighbours < 1 or self.temperature <= 0 or self.memory_size < 0:
            raise ValueError("neighbours must be >= 1, temperature > 0 and memory_size >= 0")


@register_method("look")
class LOOK(Method):
    """One view per image; its neighbours are the memory and the rest of the (global) batch, itself left out."""

    config_class = LOOKConfig
    needs_labels = True
    example_options = {"hidden_dim": 64, "projection_dim": 32, "neighbours": 5, "memory_size": 32}

    def __init__(self, backbone: Backbone, config: LOOKConfig, context: MethodContext) -> None:
        super().__init__(backbone, config, context)
        hidden = config.hidden_dim or backbone.embed_dim
        self.projection = ProjectionHead(backbone.embed_dim, hidden, config.projection_dim, config.projection_layers)
        self.criterion = LeaveOneOutKNNLoss(config.neighbours, config.temperature)
        self.memory = LabelledMemoryQueue(config.memory_size, config.projection_dim) if config.memory_size else None

    def view_specs(self) -> dict[str, ViewSpec]:
        return {"global": self.config.views.spec(self.context.img_size, count=1)}

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        if batch.labels is None:
            raise PretrainlabError("look trains with labels, but the batch has none; use a labelled dataset")
        z = F.normalize(self.projection(self.backbone.pooled(batch.views["global"][0].images)), dim=1)  # (B, D)
        labels = batch.labels
        # The current global batch (with gradients) plus the memory (detached) are the candidates.
        batch_z, batch_labels = gather_with_grad(z), gather_no_grad(labels)  # (W B, D), (W B,)
        memory_z, memory_labels = self.memory.valid() if self.memory is not None else (z[:0], labels[:0])
        candidates = torch.cat([memory_z.detach().to(z.dtype), batch_z])
        candidate_labels = torch.cat([memory_labels, batch_labels])
        self_index = memory_z.shape[0] + rank() * z.shape[0] + torch.arange(z.shape[0], device=z.device)
        loss = self.criterion(z, labels, candidates, candidate_labels, self_index)
        if self.training and self.memory is not None:
            self.memory.push(z.detach(), labels)
        return {"loss": loss}
