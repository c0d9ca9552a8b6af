"""DINO: self-distillation with no labels; a momentum teacher's centred, sharpened outputs on global views
are the targets of the student on all views (multi-crop). Optionally, RAD-DINO's iBOT masked-token loss.

Caron et al., "Emerging Properties in Self-Supervised Vision Transformers", arXiv 2104.14294.
Masked-token option: Zhou et al., "iBOT: Image BERT Pre-Training with Online Tokenizer", arXiv 2111.07832,
as used by Perez-Garcia et al., "RAD-DINO: Exploring Scalable Medical Image Encoders Beyond Text
Supervision", arXiv 2401.10815 (DINOv2's recipe, arXiv 2304.07193, on chest X-rays).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from pretrainlab.backbones import Backbone
from pretrainlab.backbones.vit_parts import encode_any_size, pooled_any_size
from pretrainlab.data.masks import random_patch_mask
from pretrainlab.data.views import ViewSpec
from pretrainlab.errors import PretrainlabError
from pretrainlab.heads import DINOHead
from pretrainlab.losses import DINOLoss, MaskedTokenDistillationLoss
from pretrainlab.methods.base import Batch, Method, MethodContext, ViewOptions, register_method
from pretrainlab.methods.parts.local_views import local_view_side
from pretrainlab.methods.parts.momentum import MomentumTeacher
from pretrainlab.methods.parts.view_presets import DINO_FIRST_GLOBAL_VIEW, DINO_LOCAL_VIEW, DINO_SECOND_GLOBAL_VIEW


@dataclass(frozen=True)
class DINOConfig:
    """Args:
        out_dim, hidden_dim, bottleneck_dim, head_layers, head_batch_norm, norm_last_layer: the DINO head
            (65536, 2048, 256, 3, no BN, fixed gain in the paper).
        student_temperature: 0.1.
        teacher_temperature: after warm-up (0.04, the reference code's default; the paper warms up to 0.07 on
            long runs, which in a 3-epoch Fashion-MNIST pilot collapsed to the uniform output, loss = ln K).
        warmup_teacher_temperature: at the start of training (0.04).
        teacher_temperature_warmup: share of training of the linear warm-up (30 of 300 epochs: 0.1).
        centre_momentum: 0.9.
        momentum: teacher EMA momentum at the start, raised to 1 on a cosine schedule (0.996).
        freeze_last_layer: share of training during which the last head layer is not trained (1 epoch).
        local_count: number of local views N (8 or 10 in the paper; 0 for two global views only).
        local_size: local view size in pixels; 0 scales 96/224 of the image size (a multiple of the ViT patch).
        local_max_scale: local crops cover local_views.crop_min_scale to this share of the image (0.05-0.4).
        views, second_views, local_views: augmentations of the two global views and of the local views.
        ibot_weight: weight of the iBOT masked-token loss (0: plain DINO; 1 in iBOT and RAD-DINO). ViTs only.
        ibot_out_dim: patch head output size (0: out_dim).
        ibot_mask_ratio: share of patches hidden from the student in a masked image (iBOT draws 0.1-0.5).
        ibot_mask_probability: share of global views that are masked at all (0.5 in iBOT and DINOv2).
    """

    out_dim: int = 65536
    hidden_dim: int = 2048
    bottleneck_dim: int = 256
    head_layers: int = 3
    head_batch_norm: bool = False
    norm_last_layer: bool = True
    student_temperature: float = 0.1
    teacher_temperature: float = 0.04
    warmup_teacher_temperature: float = 0.04
    teacher_temperature_warmup: float = 0.1
    centre_momentum: float = 0.9
    momentum: float = 0.996
    freeze_last_layer: float = 0.0
    local_count: int = 8
    local_size: int = 0
    local_max_scale: float = 0.4
    views: ViewOptions = DINO_FIRST_GLOBAL_VIEW
    second_views: ViewOptions = DINO_SECOND_GLOBAL_VIEW
    local_views: ViewOptions = DINO_LOCAL_VIEW
    ibot_weight: float = 0.0
    ibot_out_dim: int = 0
    ibot_mask_ratio: float = 0.3
    ibot_mask_probability: float = 0.5

    def __post_init__(self) -> None:
        if min(self.teacher_temperature, self.warmup_teacher_temperature, self.student_temperature) <= 0:
            raise ValueError("temperatures must be > 0")
        if self.local_count < 0 or self.ibot_weight < 0 or not 0 <= self.momentum <= 1:
            raise ValueError("local_count and ibot_weight must be >= 0 and momentum in [0, 1]")
        if not 0 <= self.ibot_mask_probability <= 1:
            raise ValueError(f"ibot_mask_probability must be in [0, 1], got {self.ibot_mask_probability}")


@register_method("dino")
class DINO(Method):
    """Student: backbone + DINO head on 2 global + N local views; teacher: their EMA, on the global views."""

    config_class = DINOConfig
    local_view_count_option = "local_count"
    example_options = {"out_dim": 64, "hidden_dim": 32, "bottleneck_dim": 16, "local_count": 2}

    def __init__(self, backbone: Backbone, config: DINOConfig, context: MethodContext) -> None:
        super().__init__(backbone, config, context)
        self.local_size = self._local_size()
        self.head = self._head(config.out_dim)
        self.criterion = DINOLoss(config.out_dim, config.student_temperature, config.centre_momentum)
        if config.ibot_weight > 0:
            if not backbone.has_tokens:
                raise PretrainlabError(
                    f"ibot_weight > 0 (the masked-token loss) needs a vision transformer, got '{backbone.name}'; "
                    "use --backbone vit_nano_patch4 or set ibot_weight=0"
                )
            patch_dim = config.ibot_out_dim or config.out_dim
            self.patch_head = self._head(patch_dim)
            self.mask_token = nn.Parameter(torch.zeros(backbone.embed_dim))
            self.patch_criterion = MaskedTokenDistillationLoss(patch_dim, config.student_temperature,
                                                               config.centre_momentum)
        self.teacher = MomentumTeacher(self.student(), config.momentum)
        self.register_buffer("progress", torch.zeros(()))  # share of training done; saved for resume

    def _head(self, out_dim: int) -> DINOHead:
        config = self.config
        return DINOHead(self.backbone.embed_dim, config.hidden_dim, config.bottleneck_dim, out_dim, config.head_layers,
                        config.head_batch_norm, config.norm_last_layer)

    def _local_size(self) -> int:
        patch = self.backbone.patch_size if self.backbone.has_tokens else 1
        if self.config.local_size % patch:
            raise PretrainlabError(f"local_size {self.config.local_size} must be a multiple of the ViT patch size "
                                   f"{patch}")
        return max(4, local_view_side(self.config.local_size, self.context.img_size, patch))

    def student(self) -> nn.ModuleDict:
        """The modules the teacher follows, in the same order."""
        parts = {"backbone": self.backbone, "head": self.head}
        if self.config.ibot_weight > 0:
            parts["patch_head"] = self.patch_head
        return nn.ModuleDict(parts)

    def view_specs(self) -> dict[str, ViewSpec]:
        size, config = self.context.img_size, self.config
        specs = {"global": config.views.spec(size), "global_second": config.second_views.spec(size)}
        if config.local_count:
            low = min(config.local_views.crop_min_scale, config.local_max_scale)
            specs["local"] = config.local_views.spec(self.local_size, count=config.local_count,
                                                     crop_scale=(low, config.local_max_scale))
        return specs

    def teacher_temperature(self, progress: float) -> float:
        """Linear warm-up from `warmup_teacher_temperature`, then constant."""
        config = self.config
        if progress >= config.teacher_temperature_warmup:
            return config.teacher_temperature
        share = progress / config.teacher_temperature_warmup
        return config.warmup_teacher_temperature + share * (config.teacher_temperature -
                                                            config.warmup_teacher_temperature)

    def sample_masks(self, batch: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
        """(batch, N) bool: `ibot_mask_ratio` of the patches of an `ibot_mask_probability` share of images."""
        grid = self.backbone.grid_size
        masks = random_patch_mask(batch, grid[0] * grid[1], self.config.ibot_mask_ratio, generator, device)
        chosen = torch.rand(batch, generator=generator, device=device) < self.config.ibot_mask_probability
        return masks & chosen[:, None]

    def encode_student_globals(self, images: torch.Tensor, masks: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        """(2B, C, S, S) -> pooled (2B, D) and, with masks, patch tokens (2B, N, D) of the masked views."""
        if masks is None:
            return (self.backbone.pooled(images),)
        vit = self.backbone.model
        # Every view goes through the mask-token path (unmasked ones have an all-False mask), so the mask
        # token is always in the graph (a zero gradient, not none, keeps DDP's reducer satisfied).
        tokens = encode_any_size(vit, images, masks, self.mask_token)  # (2B, P + N, D)
        return vit.forward_head(tokens, pre_logits=True), tokens[:, self.backbone.num_prefix_tokens :]

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        config = self.config
        progress = float(self.progress)
        globals_ = torch.cat([batch.views["global"][0].images, batch.views["global_second"][0].images])
        masks = self.sample_masks(len(globals_), batch.generator, globals_.device) if config.ibot_weight > 0 else None
        student = self.encode_student_globals(globals_, masks)
        pooled = [student[0]]
        if config.local_count:
            locals_ = torch.cat([view.images for view in batch.views["local"]])  # (N B, C, s, s)
            pooled.append(pooled_any_size(self.backbone, locals_))
        freeze = progress < config.freeze_last_layer
        student_logits = self.head(torch.cat(pooled), freeze_last_layer=freeze).chunk(2 + config.local_count)
        temperature = self.teacher_temperature(progress)
        with torch.no_grad():
            teacher_tokens = self.teacher["backbone"].tokens(globals_) if masks is not None else None
            teacher_pooled = (self.teacher["backbone"].model.forward_head(teacher_tokens, pre_logits=True)
                              if masks is not None else self.teacher["backbone"].pooled(globals_))
            teacher_logits = self.teacher["head"](teacher_pooled).chunk(2)
        dino_loss = self.criterion(list(student_logits), list(teacher_logits), temperature)
        outputs = {"dino_loss": dino_loss.detach(), "teacher_temperature": torch.tensor(temperature),
                   "momentum": torch.tensor(self.teacher.momentum)}
        loss = dino_loss
        if masks is not None:
            with torch.no_grad():
                teacher_patches = self.teacher["patch_head"](teacher_tokens[:, self.backbone.num_prefix_tokens :])
            student_patches = self.patch_head(student[1], freeze_last_layer=freeze)  # (2B, N, K)
            ibot_loss = self.patch_criterion(student_patches, teacher_patches, masks, temperature)
            loss = loss + config.ibot_weight * ibot_loss
            outputs["ibot_loss"] = ibot_loss.detach()
        return {"loss": loss, **outputs}

    def representations(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.backbone.pooled(images)
        heads = {f"head.{index}": output for index, output in enumerate(self.head.hidden_outputs(features))}
        return {"backbone": features, **heads}

    def on_step_end(self, step: int, total_steps: int) -> None:
        self.progress.fill_((step + 1) / max(1, total_steps))
        self.teacher.follow(self.student(), step, total_steps)
