"""A frozen teacher network for distillation: a run folder or a timm model, never trained, never exported.

Used by SSLD ("Beyond Self-Supervision", arXiv 2103.05959). The teacher sees the student's views after
re-normalising them to the teacher's own training statistics, at the teacher's own image size.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml

from pretrainlab.backbones import Backbone, create_backbone, load_backbone, load_weights_file
from pretrainlab.errors import PretrainlabError
from pretrainlab.safe_files import load_state_dict_file

log = logging.getLogger(__name__)


@dataclass
class TeacherParts:
    """What a teacher spec resolves to. mean/std None: the teacher was trained on the student's own statistics."""

    backbone: Backbone
    classifier: nn.Linear | None
    img_size: int
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file or a torch checkpoint (weights only, never pickle)."""
    state = load_state_dict_file(path, "teacher weights")
    if path.suffix == ".safetensors":
        return state
    return state.get("state_dict", state.get("model", state)) if isinstance(state, dict) else state


def classifier_from_weights(backbone: Backbone, state: dict[str, torch.Tensor]) -> nn.Linear | None:
    """The timm model's own classifier (fc, head, ...) when the weights file holds it, as a Linear layer."""
    model = backbone.model
    classifier = model.get_classifier() if hasattr(model, "get_classifier") else None
    name = next((key for key, module in model.named_modules() if module is classifier and key), None)
    if name is None or f"{name}.weight" not in state:
        return None
    weight = state[f"{name}.weight"]
    if weight.ndim != 2 or weight.shape[1] != backbone.embed_dim:
        return None
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=f"{name}.bias" in state)
    with torch.no_grad():
        linear.weight.copy_(weight)
        if linear.bias is not None:
            linear.bias.copy_(state[f"{name}.bias"])
    return linear


def resolve_teacher(spec: str, weights: str, img_size: int, in_chans: int) -> TeacherParts:
    """`spec` is a run folder (its backbone.safetensors and config.yaml) or `timm:NAME` (+ optional weights)."""
    if not spec:
        raise PretrainlabError("ssld needs a teacher: set teacher to a run folder (runs/NAME) or timm:NAME")
    if spec.startswith("timm:"):
        backbone = create_backbone(spec.removeprefix("timm:"), img_size, in_chans)
        classifier = None
        if weights:
            load_weights_file(backbone, Path(weights), "teacher weights")
            classifier = classifier_from_weights(backbone, read_state_dict(Path(weights)))
        else:
            log.warning("teacher %s has no teacher_weights: distilling a randomly initialised network", spec)
        return TeacherParts(backbone, classifier, img_size, None, None)
    if weights:
        raise PretrainlabError(f"teacher_weights is only for timm:NAME teachers; run folder '{spec}' has its own")
    run_dir = Path(spec)
    if not run_dir.is_dir():
        raise PretrainlabError(f"teacher '{spec}' is neither a run folder nor timm:NAME (e.g. timm:resnet18_cifar)")
    if not (run_dir / "backbone.safetensors").is_file():
        raise PretrainlabError(f"teacher run {run_dir} has no backbone.safetensors (is the run finished?)")
    backbone = load_backbone(run_dir / "backbone.safetensors")
    resolved = {}
    if (run_dir / "config.yaml").is_file():
        resolved = (yaml.safe_load((run_dir / "config.yaml").read_text()) or {}).get("resolved", {}) or {}
    mean, std = resolved.get("mean"), resolved.get("std")
    teacher_size = int(resolved.get("img_size", backbone.create_kwargs.get("img_size", img_size)))
    return TeacherParts(backbone, None, teacher_size, tuple(mean) if mean else None, tuple(std) if std else None)


class FrozenTeacher(nn.Module):
    """Wraps a teacher: always in eval mode, no gradients, the student's views adapted to its input.

    Args:
        parts: the resolved teacher.
        student_mean, student_std: (C,) normalisation of the student's views.
    """

    def __init__(self, parts: TeacherParts, student_mean: tuple[float, ...], student_std: tuple[float, ...]) -> None:
        super().__init__()
        self.backbone = parts.backbone
        self.classifier = parts.classifier
        self.img_size = parts.img_size
        self.in_chans = int(parts.backbone.create_kwargs.get("in_chans", 3))
        data_chans = len(student_mean)
        if self.in_chans != data_chans and not (data_chans == 1 and self.in_chans == 3):
            raise PretrainlabError(
                f"the teacher takes {self.in_chans}-channel images and the data has {data_chans}; only 1-channel "
                "data can feed a 3-channel teacher (the channel is repeated)"
            )
        repeat = self.in_chans // data_chans
        student_mean_t = torch.tensor(student_mean).repeat(repeat)
        student_std_t = torch.tensor(student_std).repeat(repeat)
        self.register_buffer("student_mean", student_mean_t, persistent=False)
        self.register_buffer("student_std", student_std_t, persistent=False)
        self.register_buffer("teacher_mean", torch.tensor(parts.mean) if parts.mean else student_mean_t.clone(),
                             persistent=False)
        self.register_buffer("teacher_std", torch.tensor(parts.std) if parts.std else student_std_t.clone(),
                             persistent=False)
        for parameter in self.parameters():
            parameter.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> FrozenTeacher:
        """Stays in eval mode whatever the caller asks: BatchNorm statistics and dropout are frozen too."""
        return super().train(False)

    def adapt(self, views: torch.Tensor) -> torch.Tensor:
        """Student-normalised views (B, C, S, S) -> the teacher's channels, normalisation and size."""
        if views.shape[1] != self.in_chans:
            views = views.repeat(1, self.in_chans // views.shape[1], 1, 1)
        pixels = views * self.student_std.view(1, -1, 1, 1) + self.student_mean.view(1, -1, 1, 1)
        views = (pixels - self.teacher_mean.view(1, -1, 1, 1)) / self.teacher_std.view(1, -1, 1, 1)
        if views.shape[-1] != self.img_size:
            views = F.interpolate(views, size=(self.img_size, self.img_size), mode="bilinear", align_corners=False,
                                  antialias=views.shape[-1] > self.img_size)
        return views

    @torch.no_grad()
    def forward(self, views: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """views (B, C, S, S) -> (embedding (B, D_teacher), class logits (B, K) or None)."""
        embedding = self.backbone.pooled(self.adapt(views))
        logits = self.classifier(embedding) if self.classifier is not None else None
        return embedding, logits
