"""What an attack attacks: pixels in [0, 1] -> (defence) -> normalisation -> backbone -> head -> logits.

A pre-trained backbone has no classifier, so the head is the project's linear probe (eval/linear.py) fitted
on clean training features, or a fine-tuned model (eval/finetuning.py), or the head an adversarially
fine-tuned run saved beside its backbone. The normalisation lives inside the attacked model, so every
epsilon is in pixel units of [0, 1] whatever statistics the backbone was trained with.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from pretrainlab.data.source import ImageSource
from pretrainlab.data.views import to_float
from pretrainlab.errors import PretrainlabError, unknown_name_message
from pretrainlab.eval.features import extract_features, match_channels, normalisation
from pretrainlab.eval.knn import as_labels
from pretrainlab.eval.linear import LinearProbe, fit_linear_probe
from pretrainlab.eval.target import EvalTarget

HEADS = ("linear", "finetune", "own")


class ProbeHead(nn.Module):
    """A fitted `LinearProbe` as a module: features (B, D) -> standardised -> logits (B, K)."""

    def __init__(self, probe: LinearProbe) -> None:
        super().__init__()
        self.register_buffer("mean", probe.mean.float())
        self.register_buffer("std", probe.std.float())
        self.linear = nn.Linear(probe.weight.shape[0], probe.weight.shape[1])
        with torch.no_grad():
            self.linear.weight.copy_(probe.weight.T)  # the probe stores (D, K); nn.Linear wants (K, D)
            self.linear.bias.copy_(probe.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear((features - self.mean) / self.std)


class BackboneWithHead(nn.Module):
    """Normalised images (B, C, H, W) -> backbone.pooled -> head -> logits (B, K)."""

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone.pooled(x))


class AttackedModel(nn.Module):
    """Pixels (B, C, S, S) in [0, 1] -> logits (B, K); what torchattacks and every attack here receive.

    Args:
        classifier: normalised images -> logits (a backbone with a probe, a fine-tuned `Classifier`, ...).
        mean, std: (C,) the backbone's input normalisation, applied inside.
        preprocess: a defence in front of the normalisation (pixels -> pixels), e.g. the RAW pipeline.
    """

    def __init__(self, classifier: nn.Module, mean: torch.Tensor, std: torch.Tensor,
                 preprocess: nn.Module | None = None) -> None:
        super().__init__()
        self.classifier = classifier
        self.preprocess = preprocess if preprocess is not None else nn.Identity()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.classifier((self.preprocess(pixels) - self.mean) / self.std)


@dataclass
class AttackSubject:
    """An attacked model and how it was built: the records carry `head` and `head_settings`.

    Args:
        model: pixels in [0, 1] -> logits, in eval mode.
        num_classes: logits per image.
        head: "linear", "finetune" or "own".
        head_settings: e.g. the probe's L2 strength or the fine-tuning recipe.
    """

    model: AttackedModel
    num_classes: int
    head: str
    head_settings: dict[str, Any] = field(default_factory=dict)


def pixels(target: EvalTarget, images: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 images (N, H, W, C) -> (N, in_chans, S, S) float in [0, 1] at the target's size (antialiased)."""
    x = to_float(match_channels(torch.from_numpy(np.ascontiguousarray(images)), target.in_chans).to(device))
    if x.shape[-2:] != (target.img_size, target.img_size):
        x = F.interpolate(x, size=(target.img_size, target.img_size), mode="bilinear", antialias=True,
                          align_corners=False).clamp(0.0, 1.0)
    return x.contiguous()


def num_classes_of(source: ImageSource) -> int:
    labels = [part.labels for part in (source.train, source.test) if part is not None and part.labels is not None]
    return max(source.num_classes, max(int(part.max()) for part in labels) + 1)


def probe_subject(target: EvalTarget, source: ImageSource, device: torch.device, seed: int = 0,
                  preprocess: nn.Module | None = None, train_features: torch.Tensor | None = None) -> AttackSubject:
    """The backbone + the linear probe fitted on its frozen clean training features (the issue's default head).

    `train_features` (N, D): the clean training features when the caller has them already (a gauntlet's context).
    """
    source.require_labels("an attack on a linear probe")
    mean, std = normalisation(target, source.train.images)
    features = train_features if train_features is not None else extract_features(target, source.train.images, mean,
                                                                                   std, device)
    num_classes = num_classes_of(source)
    probe = fit_linear_probe(features, as_labels(source.train.labels), num_classes, seed)
    classifier = BackboneWithHead(target.backbone, ProbeHead(probe))
    model = AttackedModel(classifier, mean, std, preprocess).to(device).eval()
    return AttackSubject(model, num_classes, "linear", {"l2": probe.l2, "solver": "lbfgs", "probe_seed": seed})


def finetuned_subject(target: EvalTarget, source: ImageSource, device: torch.device, options: dict[str, Any],
                      seed: int = 0, preprocess: nn.Module | None = None) -> AttackSubject:
    """A copy of the backbone fine-tuned with a fresh head on the clean training split (eval/finetuning.py)."""
    from pretrainlab.eval.finetuning import FineTuning
    from pretrainlab.eval.protocols import EvalContext

    source.require_labels("an attack on a fine-tuned model")
    tuning = FineTuning(EvalContext(target, source, device, dict(options)))
    classifier = tuning.finetune(source.train.images, source.train.labels, seed)
    model = AttackedModel(classifier, tuning.mean, tuning.std, preprocess).to(device).eval()
    return AttackSubject(model, tuning.num_classes, "finetune", {**tuning.describe(len(source.train)), "seed": seed})


def own_head_subject(target: EvalTarget, source: ImageSource, device: torch.device,
                     preprocess: nn.Module | None = None) -> AttackSubject:
    """The classifier head an adversarially fine-tuned run saved beside its backbone."""
    from pretrainlab.attack.defences.adversarial_training import load_run_classifier

    if target.run_dir is None:
        raise PretrainlabError(f"--head own needs a run folder written by --defence adv_finetune, got '{target.label}'")
    classifier, info = load_run_classifier(target)
    mean, std = normalisation(target, source.train.images)
    model = AttackedModel(classifier, mean, std, preprocess).to(device).eval()
    return AttackSubject(model, info["num_classes"], "own", info)


def build_subject(target: EvalTarget, source: ImageSource, device: torch.device, head: str = "linear",
                  options: dict[str, Any] | None = None, seed: int = 0,
                  preprocess: nn.Module | None = None) -> AttackSubject:
    """The attacked model for `head`: "linear" (probe), "finetune" (fresh fine-tune) or "own" (the run's saved head)."""
    if head == "linear":
        return probe_subject(target, source, device, seed, preprocess)
    if head == "finetune":
        return finetuned_subject(target, source, device, options or {}, seed, preprocess)
    if head == "own":
        return own_head_subject(target, source, device, preprocess)
    raise PretrainlabError(unknown_name_message("head", head, HEADS))


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Predicted classes (N,) on the CPU of pixels (N, C, S, S), in eval mode."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        return torch.cat([model(images[start : start + batch_size].to(device)).argmax(1).cpu()
                          for start in range(0, len(images), batch_size)])
    finally:
        model.train(was_training)
