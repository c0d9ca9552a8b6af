"""MoCo v2: contrast each query with its momentum-encoded key against a queue of past keys.

Batch norm is shuffled (MoCo, section 3.3; methods/parts/shuffled_bn.py): the query and its key are normalised
with statistics of different samples, so the model cannot use shared batch statistics to find its key.

Chen, Fan, Girshick, He, "Improved Baselines with Momentum Contrastive Learning", arXiv 2003.04297,
on top of He et al., "Momentum Contrast for Unsupervised Visual Representation Learning", arXiv 1911.05722.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from pretrainlab.backbones import Backbone
from pretrainlab.data.views import ViewSpec
from pretrainlab.distributed import is_distributed
from pretrainlab.heads import ProjectionHead
from pretrainlab.losses import InfoNCELoss
from pretrainlab.methods.base import Batch, Method, MethodContext, ViewOptions, register_method
from pretrainlab.methods.parts.momentum import MomentumTeacher
from pretrainlab.methods.parts.queue import MemoryQueue
from pretrainlab.methods.parts.shuffled_bn import shuffled_encode, split_encode
from pretrainlab.methods.parts.view_presets import MOCO_V2_VIEW


@dataclass(frozen=True)
class MoCoV2Config:
    """Args:
        temperature: InfoNCE temperature (0.2 in MoCo v2).
        queue_size: number of negative keys K (65536 on ImageNet; 4096 in the MoCo CIFAR demo).
        momentum: key-encoder momentum m (0.999 in the paper; 0.99 for short small-data runs).
        final_momentum: m at the end of training, reached on a cosine schedule (equal to `momentum`:
            constant, as in the paper).
        projection_dim: key/query size (128).
        hidden_dim: MLP head width (2048; the backbone width when 0).
        symmetric: also use the second view as query (the MoCo CIFAR demo's option; not in the paper).
        shuffle_bn: shuffled batch norm (MoCo section 3.3; on, as the paper). Off: both encoders see the whole
            batch in order, and query and key share batch statistics.
        bn_splits: batch-norm groups in one process, the GPUs it simulates (8, as the MoCo CIFAR demo's
            SplitBatchNorm); under DDP each process is one group, as in the official code.
        views: the augmentation of both views (MoCo v2's, with blur).
    """

    temperature: float = 0.2
    queue_size: int = 65536
    momentum: float = 0.999
    final_momentum: float = 0.999
    projection_dim: int = 128
    hidden_dim: int = 2048
    symmetric: bool = False
    shuffle_bn: bool = True
    bn_splits: int = 8
    views: ViewOptions = MOCO_V2_VIEW

    def __post_init__(self) -> None:
        if not 0 <= self.momentum <= self.final_momentum <= 1:
            raise ValueError(f"need 0 <= momentum <= final_momentum <= 1, got {self.momentum}, {self.final_momentum}")
        if self.bn_splits < 1:
            raise ValueError(f"bn_splits must be >= 1, got {self.bn_splits}")


@register_method("mocov2")
class MoCoV2(Method):
    """Query encoder f_q = MLP head on the backbone; key encoder f_k its EMA; keys enter a FIFO queue."""

    config_class = MoCoV2Config
    example_options = {"hidden_dim": 64, "projection_dim": 32, "queue_size": 64}

    def __init__(self, backbone: Backbone, config: MoCoV2Config, context: MethodContext) -> None:
        super().__init__(backbone, config, context)
        hidden = config.hidden_dim or backbone.embed_dim
        # MoCo v2's head: fc -> ReLU -> fc, without batch norm.
        self.projector = ProjectionHead(backbone.embed_dim, hidden, config.projection_dim, 2, batch_norm=False)
        self.key_encoder = MomentumTeacher(self.query_encoder(), config.momentum, config.final_momentum)
        self.queue = MemoryQueue(config.queue_size, config.projection_dim)
        self.criterion = InfoNCELoss(config.temperature)

    def query_encoder(self) -> nn.ModuleDict:
        """The trained modules, in the same order as `key_encoder`'s."""
        return nn.ModuleDict({"backbone": self.backbone, "projector": self.projector})

    def view_specs(self) -> dict[str, ViewSpec]:
        return {"global": self.config.views.spec(self.context.img_size, count=2)}

    def queries(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, S, S) -> (B, projection_dim); with shuffled BN in one process, `bn_splits` groups in order."""

        def encode(x: torch.Tensor) -> torch.Tensor:
            return self.projector(self.backbone.pooled(x))

        if not self.config.shuffle_bn or is_distributed():  # under DDP each process is one group already
            return encode(images)
        return split_encode(encode, self.backbone, images, self.config.bn_splits)

    def keys(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, C, S, S) -> (B, projection_dim) from the momentum encoder, without gradient; with shuffled BN
        each key is encoded among randomly chosen others, then returned in the images' order."""
        teacher = self.key_encoder

        def encode(x: torch.Tensor) -> torch.Tensor:
            return teacher["projector"](teacher["backbone"].pooled(x))

        with torch.no_grad():
            if not self.config.shuffle_bn:
                return encode(images)
            return shuffled_encode(encode, teacher, images, self.config.bn_splits, generator)

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        view_query, view_key = (view.images for view in batch.views["global"])
        # The queue is updated in place below, after the loss: the negatives must be a copy for backward.
        negatives = self.queue.items.detach().clone()  # (K, projection_dim)
        queries = self.queries(view_query)  # (B, projection_dim)
        keys = self.keys(view_key, batch.generator)
        loss = self.criterion(queries, keys, negatives)
        new_keys = [keys]
        if self.config.symmetric:
            second_keys = self.keys(view_query, batch.generator)
            second_queries = self.queries(view_key)
            loss = (loss + self.criterion(second_queries, second_keys, negatives)) / 2
            new_keys.append(second_keys)
        self.queue.push(nn.functional.normalize(torch.cat(new_keys), dim=1))
        return {"loss": loss, "momentum": torch.tensor(self.key_encoder.momentum)}

    def representations(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.backbone.pooled(images)
        heads = {f"head.{index}": output for index, output in enumerate(self.projector.hidden_outputs(features))}
        return {"backbone": features, **heads}

    def on_step_end(self, step: int, total_steps: int) -> None:
        self.key_encoder.follow(self.query_encoder(), step, total_steps)
