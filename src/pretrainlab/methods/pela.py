"""PELA's intermediate pre-training: a low-rank model learns to reproduce its frozen full-rank original.

Guo, Wang, Kankanhalli, "PELA: Learning Parameter-Efficient Models with Low-Rank Approximation",
arXiv 2310.10700 (CVPR 2024).

The student is the teacher's architecture with its linear and convolution layers factorised at `rank_ratio`
(backbones/lowrank.py; exported as the registered timm model `pela_lowrank`), initialised from the teacher's
weights by truncated SVD. Only the student trains, on unlabelled images, with
    L = feature_weight * mean_l MSE(F_l(student), F_l(teacher))          (feature distillation, every stage)
      + pooled_weight * MSE(pooled(student), pooled(teacher))           (PELA's logit term; 0 in its recipes)
      + perturbation_weight * mean_layers (||W2 W1 - W||_inf - eps)^2    (weight-perturbation regularisation)
where ||.||_inf is the largest absolute row sum of the difference between a factorised layer's product and the
original weight: it keeps the low-rank weights a small perturbation of the trained ones instead of letting them
drift to another solution. Defaults follow PELA's code (1, 0, 1, eps 0).

The method takes the backbone the pipeline built from `--backbone` (the teacher's architecture) and replaces it by
its low-rank version, which is what gets exported. `pretrainlab compress RUN --rank-ratio R` sets it all up from a
run folder (the teacher's data, size and architecture); `teacher=timm:NAME` (a random network) is for tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pretrainlab.backbones import Backbone, create_backbone, load_backbone
from pretrainlab.backbones.lowrank import (
    LOW_RANK_MODEL,
    check_rank_ratio,
    init_from_full,
    low_rank_backbone,
    low_rank_layers,
)
from pretrainlab.data.views import ViewSpec
from pretrainlab.errors import PretrainlabError
from pretrainlab.methods.base import Batch, Method, MethodContext, register_method
from pretrainlab.methods.further_sd import weights_path


@dataclass(frozen=True)
class PELAConfig:
    """Args:
        teacher: the full-rank run folder (or its backbone.safetensors), or timm:NAME (random init, for tests).
        rank_ratio: share of each factorised layer's parameters kept, in (0, 1].
        feature_weight, pooled_weight, perturbation_weight: weights of the three terms.
        perturbation_eps: the target of each layer's infinity-norm perturbation.
        crop_min_scale: random-resized-crop lower bound of the one view both networks see.
    """

    teacher: str = ""
    rank_ratio: float = 0.5
    feature_weight: float = 1.0
    pooled_weight: float = 0.0
    perturbation_weight: float = 1.0
    perturbation_eps: float = 0.0
    crop_min_scale: float = 0.35

    def __post_init__(self) -> None:
        if min(self.feature_weight, self.pooled_weight, self.perturbation_weight, self.perturbation_eps) < 0:
            raise PretrainlabError("pela weights and perturbation_eps must be >= 0")
        try:
            check_rank_ratio(self.rank_ratio)
        except ValueError as error:
            raise PretrainlabError(str(error)) from None


def load_full_teacher(spec: str, context: MethodContext) -> Backbone:
    if not spec:
        raise PretrainlabError("pela needs the full-rank model: --option teacher=RUN (or use pretrainlab compress RUN)")
    if spec.startswith("timm:"):
        return create_backbone(spec.removeprefix("timm:"), context.img_size, context.in_chans)
    return load_backbone(weights_path(spec, "teacher"))


@register_method("pela")
class PELA(Method):
    """Factorise the backbone, then distil the frozen original's features into it under the perturbation penalty."""

    config_class = PELAConfig
    example_options = {"teacher": "timm:tinycnn"}

    def __init__(self, backbone: Backbone, config: PELAConfig, context: MethodContext) -> None:
        super().__init__(backbone, config, context)
        if backbone.name == LOW_RANK_MODEL:
            raise PretrainlabError("this backbone is already low-rank; compress the original (full-rank) run")
        teacher = load_full_teacher(config.teacher, context)
        own = backbone.model.state_dict()
        if teacher.name != backbone.name or any(k not in own or own[k].shape != v.shape
                                                for k, v in teacher.model.state_dict().items()):
            raise PretrainlabError(f"the teacher is a '{teacher.name}' of another shape than --backbone "
                                   f"'{backbone.name}'; pela factorises the teacher's own architecture "
                                   "(pretrainlab compress RUN sets it up)")
        self.teacher = teacher.requires_grad_(False).eval()
        self.backbone = low_rank_backbone(backbone, config.rank_ratio)
        init_from_full(self.backbone.model, teacher.model)
        originals = dict(teacher.model.named_modules())
        self.layer_names = list(low_rank_layers(self.backbone.model))
        for index, name in enumerate(self.layer_names):  # the original weights (out, in k k), moved with the method
            self.register_buffer(f"original_{index}", originals[name].weight.detach().flatten(1).clone(),
                                 persistent=False)

    def train(self, mode: bool = True) -> PELA:
        super().train(mode)
        self.teacher.eval()  # frozen: running statistics and dropout stay as trained
        return self

    def view_specs(self) -> dict[str, ViewSpec]:
        return {"base": ViewSpec(self.context.img_size, crop_scale=(self.config.crop_min_scale, 1.0), jitter_p=0.0,
                                 grayscale_p=0.0)}

    def perturbation(self) -> torch.Tensor:
        """mean over factorised layers of (||W2 W1 - W||_inf - eps)^2, the norm being the largest absolute row sum."""
        layers = low_rank_layers(self.backbone.model)
        penalties = [((layers[name].product() - getattr(self, f"original_{index}")).abs().sum(dim=1).max()
                      - self.config.perturbation_eps) ** 2 for index, name in enumerate(self.layer_names)]
        return torch.stack(penalties).mean()

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        images = batch.views["base"][0].images
        with torch.no_grad():
            teacher_maps = self.teacher.feature_maps(images)
            teacher_pooled = self.teacher.pooled(images) if self.config.pooled_weight > 0 else None
        student_maps = self.backbone.feature_maps(images)
        features = torch.stack([F.mse_loss(s.float(), t.float())
                                for s, t in zip(student_maps, teacher_maps, strict=True)]).mean()
        loss = self.config.feature_weight * features
        outputs = {"feature_loss": features.detach()}
        if teacher_pooled is not None:
            pooled = F.mse_loss(self.backbone.pooled(images).float(), teacher_pooled.float())
            loss = loss + self.config.pooled_weight * pooled
            outputs["pooled_loss"] = pooled.detach()
        if self.config.perturbation_weight > 0 and self.layer_names:
            perturbation = self.perturbation()
            loss = loss + self.config.perturbation_weight * perturbation
            outputs["perturbation"] = perturbation.detach()
        return {"loss": loss, **outputs}
