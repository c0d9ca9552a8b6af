"""SSLD: knowledge distillation without labels, from a frozen teacher backbone to the student.

Cui, Wang, Zhao, Li, Lu, Gu, Du, Yu, Ma, "Beyond Self-Supervision: A Simple Yet Effective Network Distillation
Alternative to Improve Backbones", arXiv 2103.05959.

The paper drives the student's predictions (softmax outputs) towards the teacher's on unlabeled images,
with no ground-truth label, using the Jensen-Shannon divergence. Both networks see the same view.
What "predictions" are depends on the teacher:
- a timm teacher whose weights file holds its classifier: the teacher's class probabilities (the paper's
  setting); the student gets its own linear classifier over the same classes;
- a teacher without a classifier (a run folder, which exports only the backbone): the teacher's softmax over
  cosine similarities to anchor embeddings (the current batch and a queue of past teacher embeddings,
  as in SEED, arXiv 2101.04731); the student, projected into the teacher's space, scores the same anchors.
`mode: embedding` instead regresses the teacher's embedding (cosine or MSE) through a projection head.
The teacher stays in eval mode with gradients off; only `backbone` (the student) is exported.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from pretrainlab.backbones import Backbone
from pretrainlab.data.views import ViewSpec
from pretrainlab.errors import PretrainlabError
from pretrainlab.heads import ProjectionHead
from pretrainlab.losses.distillation import DIVERGENCES, EMBEDDING_LOSSES, embedding_distance, soft_label_divergence
from pretrainlab.methods.base import Batch, Method, MethodContext, ViewOptions, register_method
from pretrainlab.methods.parts.frozen_teacher import FrozenTeacher, resolve_teacher
from pretrainlab.methods.parts.queue import MemoryQueue

MODES = ("prediction", "embedding")


@dataclass(frozen=True)
class SSLDConfig:
    """Args:
        teacher: a run folder (runs/NAME) or timm:NAME.
        teacher_weights: weights file of a timm:NAME teacher (safetensors or .pth); without it the teacher is random.
        mode: "prediction" (soft labels, the paper's) or "embedding" (regress the teacher's features).
        divergence: "js" (the paper's Jensen-Shannon) or "kl" (teacher || student).
        class_temperature: softmax temperature of class logits (1: the plain softmax of the paper).
        anchor_temperature: softmax temperature of anchor cosine similarities.
        num_anchors: size of the queue of past teacher embeddings used as anchors.
        embedding_loss: "cosine" or "mse" for mode "embedding".
        projection_layers: Linear layers of the student's projection into the teacher's space (0: identity,
            only when both embeddings have the same size).
        hidden_dim: hidden width of that projection.
        views: augmentation of the one view both networks see.
    """

    teacher: str = ""
    teacher_weights: str = ""
    mode: str = "prediction"
    divergence: str = "js"
    class_temperature: float = 1.0
    anchor_temperature: float = 0.1
    num_anchors: int = 4096
    embedding_loss: str = "cosine"
    projection_layers: int = 2
    hidden_dim: int = 512
    views: ViewOptions = field(default_factory=lambda: ViewOptions(crop_min_scale=0.2))

    def __post_init__(self) -> None:
        if not self.teacher:
            raise PretrainlabError("ssld needs a teacher: set teacher to a run folder (runs/NAME) or timm:NAME, "
                                   "e.g. --option teacher=runs/simclr")
        for name, value, valid in (("mode", self.mode, MODES), ("divergence", self.divergence, DIVERGENCES),
                                   ("embedding_loss", self.embedding_loss, EMBEDDING_LOSSES)):
            if value not in valid:
                raise PretrainlabError(f"unknown ssld {name} '{value}'; valid: {', '.join(valid)}")
        if self.class_temperature <= 0 or self.anchor_temperature <= 0:
            raise PretrainlabError("ssld temperatures must be > 0")
        if self.num_anchors < 1 or self.projection_layers < 0:
            raise PretrainlabError("ssld needs num_anchors >= 1 and projection_layers >= 0")


@register_method("ssld")
class SSLD(Method):
    """The student (backbone + small head) matches a frozen teacher on the same unlabeled views."""

    config_class = SSLDConfig
    example_options = {"teacher": "timm:tinycnn", "num_anchors": 64, "hidden_dim": 32}

    def __init__(self, backbone: Backbone, config: SSLDConfig, context: MethodContext) -> None:
        super().__init__(backbone, config, context)
        parts = resolve_teacher(config.teacher, config.teacher_weights, context.img_size, context.in_chans)
        self.teacher = FrozenTeacher(parts, context.mean, context.std)
        self.uses_classes = config.mode == "prediction" and parts.classifier is not None
        if self.uses_classes:
            self.student_head: nn.Module = nn.Linear(backbone.embed_dim, parts.classifier.out_features)
        else:
            self.student_head = self.projection(backbone.embed_dim, parts.backbone.embed_dim)
        if config.mode == "prediction" and not self.uses_classes:
            self.anchors = MemoryQueue(config.num_anchors, parts.backbone.embed_dim)

    def projection(self, student_dim: int, teacher_dim: int) -> nn.Module:
        if self.config.projection_layers == 0:
            if student_dim != teacher_dim:
                raise PretrainlabError(
                    f"student width {student_dim} differs from teacher width {teacher_dim}; "
                    "set projection_layers >= 1 to map one onto the other"
                )
            return nn.Identity()
        return ProjectionHead(student_dim, self.config.hidden_dim, teacher_dim, self.config.projection_layers)

    def view_specs(self) -> dict[str, ViewSpec]:
        return {"base": self.config.views.spec(self.context.img_size)}

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        images = batch.views["base"][0].images  # (B, C, S, S), seen by both networks
        teacher_embedding, teacher_classes = self.teacher(images)  # (B, D_t), (B, K) or None
        student = self.student_head(self.backbone.pooled(images))  # (B, K) or (B, D_t)
        if self.config.mode == "embedding":
            loss = embedding_distance(student, teacher_embedding, self.config.embedding_loss)
            return {"loss": loss}
        if self.uses_classes:
            temperature = self.config.class_temperature
            teacher_logits, student_logits = teacher_classes / temperature, student / temperature
        else:
            teacher_logits, student_logits = self.anchor_logits(teacher_embedding, student)
        loss = soft_label_divergence(teacher_logits, student_logits, self.config.divergence)
        agreement = (teacher_logits.argmax(dim=1) == student_logits.argmax(dim=1)).float().mean()
        return {"loss": loss, "teacher_agreement": agreement.detach()}

    def anchor_logits(self, teacher_embedding: torch.Tensor,
                      student: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both networks' cosine similarities to the same anchors, over the temperature: (B, B + Q) each."""
        teacher_unit = F.normalize(teacher_embedding.float(), dim=1)  # (B, D_t)
        anchors = torch.cat([teacher_unit, self.anchors.valid().to(teacher_unit.dtype)])  # (B + Q, D_t)
        temperature = self.config.anchor_temperature
        teacher_logits = teacher_unit @ anchors.T / temperature
        student_logits = F.normalize(student.float(), dim=1) @ anchors.T / temperature
        if self.training:
            self.anchors.push(teacher_unit)
        return teacher_logits, student_logits
