"""NMI-HAD: NMI-guided hybrid attention distillation, UNIP's pre-training target.

Zhang, Wen, Chen, Ding, Xiang, Pan, "UNIP: Rethinking Pre-trained Attention Patterns for Infrared Semantic
Segmentation", ICLR 2025, arXiv 2502.02257.

A frozen pre-trained ViT teacher (MAE, DINO, ...) shows three attention patterns across its layers: local,
hybrid and global. The hybrid pattern (attending to nearby and to shared foreground tokens at once) is the one
that transfers to segmentation, and UNIP finds it by the NMI between query and key positions. The student is
trained to reproduce the attention distribution of the teacher's hybrid layer in its own last layer: per head
and per query, KL(teacher || student) over the keys, averaged (the reference implementation's `KL` loss; the
student's blocks after the last attention play no part, as there). Only the student `backbone` is exported.

Here the teacher layer is chosen on the first training batch when `teacher_layer` is -1: the deepest layer whose
head-averaged NMI lies in the hybrid band (explain/attention.py's thresholds), else the layer whose NMI is
closest to the band's middle. UNIP gives its student's last layer as many heads as the teacher's; a timm
student keeps its own, so when the head counts differ both attentions are averaged over heads first (said in the
log). Teacher and student must have the same number of tokens.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from pretrainlab.backbones import Backbone
from pretrainlab.backbones.attention import block_with_probabilities
from pretrainlab.backbones.attention_maps import attention_maps, attention_nmi, patch_attention
from pretrainlab.backbones.vit_parts import embed_tokens
from pretrainlab.data.views import ViewSpec
from pretrainlab.errors import PretrainlabError
from pretrainlab.methods.base import Batch, Method, MethodContext, register_method
from pretrainlab.methods.parts.frozen_teacher import FrozenTeacher, resolve_teacher

log = logging.getLogger(__name__)

HYBRID_BAND = (0.10, 0.30)  # NMI of hybrid layers (explain/attention.py: global below, local above)


@dataclass(frozen=True)
class NMIHADConfig:
    """Args:
        teacher: a ViT run folder (runs/NAME) or timm:NAME.
        teacher_weights: weights file of a timm:NAME teacher (safetensors or .pth).
        teacher_layer: index of the teacher block whose attention is distilled; -1 chooses it by NMI.
        temperature: divides the teacher's attention logits (1 in UNIP's recipes).
        crop_min_scale: random-resized-crop lower bound of the one view both networks see (MAE's 0.2).
    """

    teacher: str = ""
    teacher_weights: str = ""
    teacher_layer: int = -1
    temperature: float = 1.0
    crop_min_scale: float = 0.2

    def __post_init__(self) -> None:
        if not self.teacher:
            raise PretrainlabError("nmi_had needs a ViT teacher: --option teacher=runs/NAME or teacher=timm:NAME")
        if self.temperature <= 0:
            raise PretrainlabError(f"nmi_had temperature must be > 0, got {self.temperature}")


def choose_hybrid_layer(nmi_per_layer: list[float]) -> int:
    """The deepest layer whose NMI is in HYBRID_BAND, else the one closest to the band's middle."""
    low, high = HYBRID_BAND
    hybrid = [index for index, value in enumerate(nmi_per_layer) if low <= value < high]
    if hybrid:
        return hybrid[-1]
    middle = (low + high) / 2
    return min(range(len(nmi_per_layer)), key=lambda index: abs(nmi_per_layer[index] - middle))


def attention_kl(teacher: torch.Tensor, student: torch.Tensor) -> torch.Tensor:
    """Mean over (batch, head, query) of KL(teacher || student) over keys; both (B, H, L, L) probabilities."""
    teacher, student = teacher.float(), student.float()
    return (teacher * (teacher.clamp(min=1e-12).log() - student.clamp(min=1e-12).log())).sum(-1).mean()


@register_method("nmi_had")
class NMIHAD(Method):
    """The student's last-layer attention learns the teacher's hybrid-layer attention."""

    config_class = NMIHADConfig
    needs_tokens = True
    example_options = {"teacher": "timm:vit_nano_patch4"}

    def __init__(self, backbone: Backbone, config: NMIHADConfig, context: MethodContext) -> None:
        super().__init__(backbone, config, context)
        parts = resolve_teacher(config.teacher, config.teacher_weights, context.img_size, context.in_chans)
        if not parts.backbone.has_tokens:
            raise PretrainlabError(f"nmi_had distils attention: the teacher '{config.teacher}' must be a ViT")
        self.teacher = FrozenTeacher(parts, context.mean, context.std)
        depth = len(parts.backbone.model.blocks)
        if not -1 <= config.teacher_layer < depth:
            raise PretrainlabError(f"teacher_layer must be -1 (chosen by NMI) or 0..{depth - 1}, got "
                                   f"{config.teacher_layer}")
        self.register_buffer("layer", torch.tensor(config.teacher_layer), persistent=True)

    def view_specs(self) -> dict[str, ViewSpec]:
        return {"base": ViewSpec(self.context.img_size, crop_scale=(self.config.crop_min_scale, 1.0), jitter_p=0.0,
                                 grayscale_p=0.0)}

    @torch.no_grad()
    def teacher_attention(self, images: torch.Tensor) -> torch.Tensor:
        """The teacher's attention (B, H_t, L, L) at its distilled layer (chosen on the first call when -1)."""
        teacher = self.teacher.backbone
        views = self.teacher.adapt(images)
        if int(self.layer) < 0:
            maps, _ = attention_maps(teacher.model, views)
            nmi = [float(attention_nmi(patch_attention(m, teacher.num_prefix_tokens)).mean()) for m in maps]
            self.layer.fill_(choose_hybrid_layer(nmi))
            log.info("nmi_had: teacher layer %d chosen (head-mean NMI per layer: %s)", int(self.layer),
                     ", ".join(f"{value:.3f}" for value in nmi))
            return maps[int(self.layer)]
        maps, _ = attention_maps(teacher.model, views, last=int(self.layer))
        return maps[-1]

    def student_attention(self, images: torch.Tensor) -> torch.Tensor:
        """The student's last-layer attention (B, H_s, L, L); its last MLP is not run (UNIP stops there too)."""
        vit = self.backbone.model
        tokens, _ = embed_tokens(vit, images)
        for block in list(vit.blocks)[:-1]:
            tokens = block(tokens)
        _, probabilities = block_with_probabilities(vit.blocks[-1], tokens)
        return probabilities

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        images = batch.views["base"][0].images  # (B, C, S, S)
        teacher = self.teacher_attention(images)
        if self.config.temperature != 1.0:
            teacher = torch.softmax(teacher.clamp(min=1e-12).log() / self.config.temperature, dim=-1)
        student = self.student_attention(images)
        if teacher.shape[-1] != student.shape[-1]:
            raise PretrainlabError(f"teacher attention covers {teacher.shape[-1]} tokens and the student's "
                                   f"{student.shape[-1]}: use a teacher with the same patch grid and prefix tokens")
        if teacher.shape[1] != student.shape[1]:  # different head counts: compare head-averaged attention
            teacher, student = teacher.mean(dim=1, keepdim=True), student.mean(dim=1, keepdim=True)
        return {"loss": attention_kl(teacher, student), "teacher_layer": self.layer.float()}
