"""Composed multi-task pre-training: one backbone, the weighted sum of several registered methods' losses.

"Heuristic Vision Pre-Training with Self-Supervised and Supervised Multi-Task Learning", arXiv 2310.07510:
one shared backbone learns from several pretext tasks at once (there: masked image modelling,
contrastive learning and supervised classification), each with its own views and heads.

`--method compose:mae+simclr+supervised` builds such a method from any registered methods: each member
is the ordinary method built around the same backbone object, prepares its own views from the batch
(drawing from the step's generator in member order) and computes its own loss; the composition's loss
is sum_m weights.m * loss_m. Options are namespaced by member: `--option weights.mae=1.0`,
`--option mae.mask_ratio=0.6`, `--option simclr.temperature=0.2`; members start from their dataclass
defaults (the packaged recipes/compose.yaml sets recipe values for compose:mae+simclr+supervised).
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from pretrainlab.backbones import Backbone
from pretrainlab.errors import PretrainlabError, UnknownNameError
from pretrainlab.methods.base import METHODS, Batch, Method, MethodContext

PREFIX = "compose:"
MEMBERS_KEY = "members"  # Batch.extra key of the members' own batches


def member_names(name: str) -> list[str]:
    """`compose:a+b+c` -> ["a", "b", "c"], with a clear error for unknown, repeated or nested members."""
    members = name.removeprefix(PREFIX).split("+")
    if len(members) < 2 or "" in members:
        raise PretrainlabError(f"'{name}' must name two or more methods joined by '+', e.g. compose:mae+simclr")
    repeated = sorted({m for m in members if members.count(m) > 1})
    if repeated:
        raise PretrainlabError(f"'{name}' names {', '.join(repeated)} more than once; each member appears once")
    for member in members:
        if member.startswith(PREFIX) or ":" in member:
            raise PretrainlabError(f"'{name}': compositions do not nest ('{member}')")
        try:
            METHODS.get(member)
        except UnknownNameError as error:
            raise UnknownNameError(f"in '{name}': {error}") from None
    return members


def composition_config_class(members: list[str]) -> type:
    """A frozen dataclass: `weights` (one float per member, default 1.0) and each member's own config."""
    weights = dataclasses.make_dataclass(
        "ComposeWeights", [(m, float, dataclasses.field(default=1.0)) for m in members], frozen=True)
    fields: list[tuple[str, Any, Any]] = [("weights", weights, dataclasses.field(default_factory=weights))]
    for member in members:
        member_config = METHODS.get(member).config_class
        fields.append((member, member_config, dataclasses.field(default_factory=member_config)))
    return dataclasses.make_dataclass("ComposeConfig", fields, frozen=True)


@functools.cache
def composed_method_class(name: str) -> type[Method]:
    """The Method subclass of composition `name` (built once per name, so lookups return the same class)."""
    members = member_names(name)
    classes = [METHODS.get(m) for m in members]
    attributes = {
        "name": name, "members": tuple(members), "config_class": composition_config_class(members),
        "needs_labels": any(c.needs_labels for c in classes), "needs_tokens": any(c.needs_tokens for c in classes),
        "needs_captions": any(c.needs_captions for c in classes),
        "example_options": {m: dict(c.example_options) for m, c in zip(members, classes, strict=True)},
    }
    return type(f"Composed[{'+'.join(members)}]", (ComposedMethod,), attributes)


class ComposedMethod(Method):
    """Runs every member on its own views of the batch; all members hold the one shared backbone."""

    members: tuple[str, ...] = ()

    def __init__(self, backbone: Backbone, config: Any, context: MethodContext) -> None:
        token_members = [m for m in self.members if METHODS.get(m).needs_tokens]
        if token_members and not backbone.has_tokens:
            raise PretrainlabError(
                f"'{self.name}' needs a vision transformer backbone (its member(s) {', '.join(token_members)} work "
                f"on patch tokens), got '{backbone.name}'; try --backbone vit_nano_patch4 or vit_tiny_patch4"
            )
        super().__init__(backbone, config, context)
        self.member_methods = nn.ModuleDict(
            {m: METHODS.get(m)(backbone, getattr(config, m), context) for m in self.members})

    def training_labels(self, labels: np.ndarray | None) -> tuple[np.ndarray | None, dict[str, Any]]:
        """A member's own training labels (supervised with label_noise) become the run's: every member sees them."""
        changed = [(member, *method.training_labels(labels)) for member, method in self.member_methods.items()]
        changed = [(member, new, notes) for member, new, notes in changed if new is not labels]
        if len(changed) > 1:
            raise PretrainlabError(f"'{self.name}': members {', '.join(m for m, _, _ in changed)} each change the "
                                   "training labels (e.g. label_noise); set it on one member only")
        return (changed[0][1], {**changed[0][2], "labels_from_member": changed[0][0]}) if changed else (labels, {})

    @torch.no_grad()
    def prepare_batch(self, images_uint8: torch.Tensor, labels: torch.Tensor | None,
                      generator: torch.Generator) -> Batch:
        """Each member's own Batch, in member order; their views are also listed as "member/view"."""
        member_batches = {m: method.prepare_batch(images_uint8, labels, generator)
                          for m, method in self.member_methods.items()}
        views = {f"{m}/{view}": value for m, batch in member_batches.items() for view, value in batch.views.items()}
        images = next(iter(member_batches.values())).images
        return Batch(views=views, images=images, labels=labels, generator=generator,
                     extra={MEMBERS_KEY: member_batches})

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        shared = {key: value for key, value in batch.extra.items() if key != MEMBERS_KEY}  # e.g. pair partners
        total: torch.Tensor | float = 0.0
        logged: dict[str, torch.Tensor] = {}
        for member, method in self.member_methods.items():
            member_batch = batch.extra[MEMBERS_KEY][member]
            member_batch.extra.update(shared)
            outputs = method(member_batch)
            total = total + getattr(self.config.weights, member) * outputs["loss"]
            logged.update({f"{member}/{key}": value.detach() for key, value in outputs.items()})
            if "reconstruction_loss" in outputs:  # the first reconstructing member's, for tables
                logged.setdefault("reconstruction_loss", outputs["reconstruction_loss"].detach())
        return {"loss": total, **logged}

    def representations(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """The backbone's features, and every member's head outputs as "member.head.N"."""
        named = {"backbone": self.backbone.pooled(images)}
        for member, method in self.member_methods.items():
            named.update({f"{member}.{key}": value for key, value in method.representations(images).items()
                          if key != "backbone"})
        return named

    def on_step_end(self, step: int, total_steps: int) -> None:
        for method in self.member_methods.values():
            method.on_step_end(step, total_steps)

    def save_artifacts(self, run_dir: Path) -> None:
        for method in self.member_methods.values():
            method.save_artifacts(run_dir)

    def reconstruction_grid(self, images: torch.Tensor,
                            generator: torch.Generator | None = None) -> torch.Tensor | None:
        """The first reconstructing member's grid."""
        for method in self.member_methods.values():
            grid = method.reconstruction_grid(images, generator)
            if grid is not None:
                return grid
        return None

    def excluded_from_weight_decay(self, name: str, parameter: nn.Parameter) -> bool:
        """Each member decides for its own parameters (its names without the "member_methods.M." prefix)."""
        member, _, rest = name.removeprefix("member_methods.").partition(".")
        if name.startswith("member_methods.") and member in self.member_methods:
            return self.member_methods[member].excluded_from_weight_decay(rest, parameter)
        return super().excluded_from_weight_decay(name, parameter)


METHODS.register_prefix(PREFIX, composed_method_class)
