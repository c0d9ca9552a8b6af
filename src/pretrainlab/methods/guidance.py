"""Guidance: a target network trains on its task while its layers are pulled towards a frozen guide's.

Subramaniam, Mayo, Conwell, Poggio, Katz, Cheung, Barbu, "Training the Untrainable: Introducing Inductive Bias
via Representational Alignment", arXiv 2410.20035.

    L = L_task(target) + weight * mean_l (1 - CKA(F_l(target), F_m(l)(guide)))

The guide is frozen and may be untrained: then only its architectural prior is transferred (the paper's
surprising finding is how much that alone helps: a fully connected network stops overfitting when aligned with a
random CNN, a plain deep CNN trains when aligned with a ResNet). Layers are the backbones' `feature_maps` (every
stage or block); target layer l of T is paired with guide layer m(l) = round(l (G - 1) / (T - 1)) of G, so first
meets first and last meets last. Distances are linear CKA on the whole flattened activations of the batch, as in
the paper (`cka_grid` N > 0 averages each map down to at most N x N first, a cheaper approximation).

The task is any registered method (`base`, default `supervised`; `compose:...` works too), built around the same
backbone; its views, heads, schedules and representations are the base's. The guide sees the base's first view
(or `view`), re-normalised and resized to the guide's own statistics when it is a run folder with other data.
`guide` is a run folder or `timm:NAME` (random init unless `guide_weights`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from pretrainlab.backbones import Backbone
from pretrainlab.config import build_config
from pretrainlab.errors import PretrainlabError
from pretrainlab.heads import ProjectionHead
from pretrainlab.losses.cka import CKADistance
from pretrainlab.methods.base import METHODS, Batch, Method, MethodContext, register_method
from pretrainlab.methods.parts.frozen_teacher import FrozenTeacher, resolve_teacher


@dataclass(frozen=True)
class GuidanceConfig:
    """Args:
        guide: the frozen guide: a run folder, or timm:NAME (untrained unless guide_weights is given).
        guide_weights: a weights file for a timm:NAME guide.
        base: the target's task, a registered method (supervised, simclr, compose:..., ...).
        base_options: that method's options.
        weight: weight of the representational distance.
        view: the base view the guide sees ("" = the first one).
        cka_grid: 0 = CKA on whole maps (the paper's); N = average-pool maps to at most N x N first.
    """

    guide: str = ""
    guide_weights: str = ""
    base: str = "supervised"
    base_options: dict[str, Any] = field(default_factory=dict)
    weight: float = 1.0
    view: str = ""
    cka_grid: int = 0

    def __post_init__(self) -> None:
        if self.weight < 0 or self.cka_grid < 0:
            raise PretrainlabError("guidance weight and cka_grid must be >= 0")


def pair_layers(target_layers: int, guide_layers: int) -> list[int]:
    """For each target layer, the guide layer at the same relative depth."""
    if target_layers == 1:
        return [guide_layers - 1]
    return [round(index * (guide_layers - 1) / (target_layers - 1)) for index in range(target_layers)]


@register_method("guidance")
class Guidance(Method):
    """The base method's loss plus the CKA distance of every target layer to its guide layer."""

    config_class = GuidanceConfig
    example_options = {"guide": "timm:tinycnn", "base": "simclr", "base_options": {"hidden_dim": 32}}

    def __init__(self, backbone: Backbone, config: GuidanceConfig, context: MethodContext) -> None:
        super().__init__(backbone, config, context)
        if not config.guide:
            raise PretrainlabError("guidance needs a guide: --option guide=runs/NAME or guide=timm:NAME")
        base_class = METHODS.get(config.base)
        if base_class is Guidance:
            raise PretrainlabError("guidance cannot guide itself; set base to a task such as supervised or simclr")
        self.base = base_class(backbone, build_config(base_class.config_class, dict(config.base_options),
                                                      f"{config.base} (base)"), context)
        parts = resolve_teacher(config.guide, config.guide_weights, context.img_size, context.in_chans)
        self.guide = FrozenTeacher(parts, context.mean, context.std)
        self.distance = CKADistance()

    def guide_view(self, batch: Batch) -> torch.Tensor:
        name = self.config.view or next(iter(batch.views))
        if name not in batch.views:
            raise PretrainlabError(f"guidance view '{name}' is not a view of '{self.config.base}': {list(batch.views)}")
        return batch.views[name][0].images

    def shrink(self, maps: list[torch.Tensor]) -> list[torch.Tensor]:
        grid = self.config.cka_grid
        if grid == 0:
            return maps
        return [F.adaptive_avg_pool2d(m, (min(grid, m.shape[-2]), min(grid, m.shape[-1]))) for m in maps]

    @torch.no_grad()
    def prepare_batch(self, images_uint8: torch.Tensor, labels: torch.Tensor | None,
                      generator: torch.Generator) -> Batch:
        return self.base.prepare_batch(images_uint8, labels, generator)

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        outputs = dict(self.base(batch))
        base_loss = outputs.pop("loss")
        images = self.guide_view(batch)
        targets = self.backbone.feature_maps(images)
        guides = self.guide.feature_maps(images)
        paired = [guides[index] for index in pair_layers(len(targets), len(guides))]
        distance = self.distance(self.shrink(targets), self.shrink(paired))
        outputs.update({"loss": base_loss + self.config.weight * distance, "base_loss": base_loss.detach(),
                        "cka_distance": distance.detach()})
        return outputs

    # -- everything else is the base method's ---------------------------------------------------
    def view_specs(self) -> dict:
        return self.base.view_specs()

    def on_step_end(self, step: int, total_steps: int) -> None:
        self.base.on_step_end(step, total_steps)

    def representations(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.base.representations(images)

    def projection_head(self) -> ProjectionHead | None:
        return self.base.projection_head()

    def excluded_from_weight_decay(self, name: str, parameter: torch.nn.Parameter) -> bool:
        if name.startswith("base."):
            return self.base.excluded_from_weight_decay(name.removeprefix("base."), parameter)
        return super().excluded_from_weight_decay(name, parameter)
