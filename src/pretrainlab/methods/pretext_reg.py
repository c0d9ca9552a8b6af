"""Pretext-task regularisation: rotation and jigsaw prediction added to any registered method.

Kinakh, Taran, Voloshynovskiy, "ScatSimCLR: self-supervised contrastive learning with pretext task
regularization for small-scale datasets", arXiv 2108.13939: the total loss is the contrastive loss plus
lambda times the loss of predicting the parameters of an augmentation applied to a separate view: its
rotation (Gidaris et al., arXiv 1803.07728) or its jigsaw permutation (Noroozi and Favaro, arXiv 1603.09246,
permutations chosen for maximal Hamming distance). Here the jigsaw view is one image whose tiles are
shuffled, so both tasks cost one backbone pass.

How it composes: `base` names any registered method, built from the registry with `base_options` around
the same backbone object. Its views, forward, `on_step_end` (momentum encoders, queues, schedules),
representations and projection head are the base's; this wrapper adds its own two views, two small
classifiers on the backbone's pooled features, and the weighted auxiliary losses. Logged: the base's
scalars, `base_loss`, and the loss and accuracy of each pretext task.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from pretrainlab.backbones import Backbone
from pretrainlab.config import build_config
from pretrainlab.data.pretext_transforms import hamming_permutations, rotate_each, shuffle_tiles
from pretrainlab.data.views import ViewSpec, make_views
from pretrainlab.errors import PretrainlabError
from pretrainlab.heads import ProjectionHead
from pretrainlab.methods.base import METHODS, Batch, Method, MethodContext, ViewOptions, register_method

ROTATION_VIEW, JIGSAW_VIEW = "pretext_rotation", "pretext_jigsaw"


@dataclass(frozen=True)
class PretextRegConfig:
    """Args:
        base: the registered method to regularise (simclr, byol, moco_v2, ...).
        base_options: that method's options, as in its recipe's method_options.
        rotation_weight: weight of the 4-way rotation loss (ScatSimCLR: lambda = 0.3; 0 turns it off).
        jigsaw_weight: weight of the jigsaw-permutation loss (0 turns it off).
        jigsaw_grid: tiles per side (3: the 3x3 puzzle of Noroozi and Favaro).
        num_permutations: jigsaw classes (ScatSimCLR uses 35).
        permutation_seed: seed of the permutation set (fixed, so every run shares the classes).
        hidden_dim: hidden width of the two classifiers.
        views: augmentation of the two pretext views.
    """

    base: str = "simclr"
    base_options: dict[str, Any] = field(default_factory=dict)
    rotation_weight: float = 0.3
    jigsaw_weight: float = 0.3
    jigsaw_grid: int = 3
    num_permutations: int = 35
    permutation_seed: int = 0
    hidden_dim: int = 512
    views: ViewOptions = field(default_factory=lambda: ViewOptions(crop_min_scale=0.3))

    def __post_init__(self) -> None:
        if self.rotation_weight < 0 or self.jigsaw_weight < 0:
            raise PretrainlabError("pretext_reg weights must be >= 0")
        if self.rotation_weight == 0 and self.jigsaw_weight == 0:
            raise PretrainlabError("pretext_reg needs rotation_weight or jigsaw_weight > 0 (else train the base alone)")
        if self.jigsaw_grid < 2:
            raise PretrainlabError(f"jigsaw_grid must be >= 2, got {self.jigsaw_grid}")


def build_base(config: PretextRegConfig, backbone: Backbone, context: MethodContext) -> Method:
    """The base method from the registry, around the same backbone."""
    base_class = METHODS.get(config.base)
    if base_class is PretextRegularized:
        raise PretrainlabError("pretext_reg cannot wrap itself; set base to another method (e.g. simclr)")
    base_config = build_config(base_class.config_class, dict(config.base_options), f"{config.base} (base)")
    base = base_class(backbone, base_config, context)
    clashing = {ROTATION_VIEW, JIGSAW_VIEW} & set(base.view_specs())
    if clashing:
        raise PretrainlabError(f"base method '{config.base}' already uses the view names {sorted(clashing)}")
    return base


@register_method("pretext_reg")
class PretextRegularized(Method):
    """base loss + rotation_weight * rotation cross-entropy + jigsaw_weight * permutation cross-entropy."""

    config_class = PretextRegConfig
    example_options = {"base": "simclr", "base_options": {"hidden_dim": 32, "projection_dim": 16},
                       "hidden_dim": 32, "jigsaw_grid": 2, "num_permutations": 6}

    def __init__(self, backbone: Backbone, config: PretextRegConfig, context: MethodContext) -> None:
        super().__init__(backbone, config, context)
        self.base = build_base(config, backbone, context)
        width = backbone.embed_dim
        if config.rotation_weight > 0:
            self.rotation_head = ProjectionHead(width, config.hidden_dim, 4)
        if config.jigsaw_weight > 0:
            tile = context.img_size // config.jigsaw_grid
            if tile < 2:
                raise PretrainlabError(f"jigsaw_grid {config.jigsaw_grid} leaves tiles under 2 px at "
                                       f"{context.img_size} px; use a grid <= {context.img_size // 2}")
            self.jigsaw_size = tile * config.jigsaw_grid
            permutations = hamming_permutations(config.jigsaw_grid**2, config.num_permutations,
                                                config.permutation_seed)
            self.register_buffer("permutations", permutations)  # (P, T), saved with the checkpoint
            self.jigsaw_head = ProjectionHead(width, config.hidden_dim, config.num_permutations)

    def own_view_specs(self) -> dict[str, ViewSpec]:
        specs = {}
        if self.config.rotation_weight > 0:
            specs[ROTATION_VIEW] = self.config.views.spec(self.context.img_size)
        if self.config.jigsaw_weight > 0:
            specs[JIGSAW_VIEW] = self.config.views.spec(self.jigsaw_size)
        return specs

    def view_specs(self) -> dict[str, ViewSpec]:
        return {**self.base.view_specs(), **self.own_view_specs()}

    @torch.no_grad()
    def prepare_batch(self, images_uint8: torch.Tensor, labels: torch.Tensor | None,
                      generator: torch.Generator) -> Batch:
        batch = self.base.prepare_batch(images_uint8, labels, generator)  # the base may build views its own way
        for name, spec in self.own_view_specs().items():
            batch.views[name] = [make_views(batch.images, spec, generator, self.mean, self.std)]
        return batch

    def pretext_inputs(self, batch: Batch) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The rotated and tile-shuffled images with their class labels, for the enabled tasks."""
        inputs, targets = [], []
        if self.config.rotation_weight > 0:
            images = batch.views[ROTATION_VIEW][0].images  # (B, C, S, S)
            turns = torch.randint(4, (len(images),), generator=batch.generator, device=images.device)
            inputs.append(rotate_each(images, turns))
            targets.append(turns)
        if self.config.jigsaw_weight > 0:
            images = batch.views[JIGSAW_VIEW][0].images  # (B, C, grid * tile, grid * tile)
            classes = torch.randint(len(self.permutations), (len(images),), generator=batch.generator,
                                    device=images.device)
            shuffled = shuffle_tiles(images, self.config.jigsaw_grid, self.permutations[classes])
            if shuffled.shape[-1] != self.context.img_size:  # back to the training size (fixed-size ViTs)
                shuffled = F.interpolate(shuffled, size=(self.context.img_size,) * 2, mode="bilinear",
                                         align_corners=False)
            inputs.append(shuffled)
            targets.append(classes)
        return inputs, targets

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        outputs = dict(self.base(batch))
        base_loss = outputs.pop("loss")
        inputs, targets = self.pretext_inputs(batch)
        features = self.backbone.pooled(torch.cat(inputs)).split([len(x) for x in inputs])  # one pass, both tasks
        tasks = []
        if self.config.rotation_weight > 0:
            tasks.append(("rotation", self.rotation_head, self.config.rotation_weight))
        if self.config.jigsaw_weight > 0:
            tasks.append(("jigsaw", self.jigsaw_head, self.config.jigsaw_weight))
        loss = base_loss
        for (task, head, weight), task_features, task_targets in zip(tasks, features, targets, strict=True):
            logits = head(task_features)
            task_loss = F.cross_entropy(logits.float(), task_targets)
            loss = loss + weight * task_loss
            outputs[f"{task}_loss"] = task_loss.detach()
            outputs[f"{task}_accuracy"] = (logits.argmax(dim=1) == task_targets).float().mean().detach()
        outputs.update({"loss": loss, "base_loss": base_loss.detach()})
        return outputs

    # -- everything else is the base method's ---------------------------------------------------
    def on_step_end(self, step: int, total_steps: int) -> None:
        self.base.on_step_end(step, total_steps)

    def representations(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.base.representations(images)

    def projection_head(self) -> ProjectionHead | None:
        return self.base.projection_head()

    def reconstruction_grid(self, images: torch.Tensor,
                            generator: torch.Generator | None = None) -> torch.Tensor | None:
        return self.base.reconstruction_grid(images, generator)

    def excluded_from_weight_decay(self, name: str, parameter: torch.nn.Parameter) -> bool:
        if name.startswith("base."):
            return self.base.excluded_from_weight_decay(name.removeprefix("base."), parameter)
        return super().excluded_from_weight_decay(name, parameter)
