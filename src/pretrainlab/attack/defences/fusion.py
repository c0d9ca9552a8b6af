"""Contextual fusion: the features of two backbones trained on different data, concatenated under one probe.

Akumalla, Haney, Bazhenov, "Contextual Fusion For Adversarial Robustness", arXiv 2011.09526: late fusion of
a scene-level (Places) and an object-level (ImageNet) CNN's pooled features under one classifier, so a
perturbation has to fool two feature extractors that learned different things. Here any two backbones (run
folders or timm models) are fused: each receives the image in its own format (channels, size, normalisation)
and the linear probe of eval/linear.py is fitted on the concatenated clean features. The fused model is
differentiable end to end, so it is attacked with the same white-box attacks, AutoAttack included.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from pretrainlab.attack.model import AttackedModel, AttackSubject, BackboneWithHead, ProbeHead, pixels
from pretrainlab.data.color import grayscale
from pretrainlab.data.source import ImageSource
from pretrainlab.eval.features import evaluating, normalisation
from pretrainlab.eval.knn import as_labels
from pretrainlab.eval.linear import fit_linear_probe
from pretrainlab.eval.target import EvalTarget


class MemberInput(nn.Module):
    """Pixels (B, C, S, S) in [0, 1] -> one member's normalised input (B, C', S', S')."""

    def __init__(self, in_chans: int, img_size: int, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.in_chans, self.img_size = in_chans, img_size
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.in_chans:
            x = x.expand(-1, self.in_chans, -1, -1) if x.shape[1] == 1 else grayscale(x)
        if x.shape[-1] != self.img_size:
            x = F.interpolate(x, size=(self.img_size, self.img_size), mode="bilinear", align_corners=False)
        return (x - self.mean) / self.std


class FusedBackbone(nn.Module):
    """Pixels in [0, 1] -> the concatenated pooled features (B, D1 + D2 + ...) of several backbones."""

    def __init__(self, backbones: list[nn.Module], inputs: list[MemberInput]) -> None:
        super().__init__()
        self.backbones, self.inputs = nn.ModuleList(backbones), nn.ModuleList(inputs)
        self.embed_dim = sum(int(backbone.embed_dim) for backbone in backbones)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([backbone.pooled(adapt(x)) for backbone, adapt in zip(self.backbones, self.inputs,
                                                                                 strict=True)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pooled(x)


def fuse(targets: list[EvalTarget], source: ImageSource) -> FusedBackbone:
    """The fused backbone of `targets`, each fed in its own format (its normalisation, or the data's statistics)."""
    inputs = []
    for target in targets:
        mean, std = normalisation(target, source.train.images)
        inputs.append(MemberInput(target.in_chans, target.img_size, mean, std))
    return FusedBackbone([target.backbone for target in targets], inputs)


@torch.no_grad()
def fused_features(fused: FusedBackbone, first: EvalTarget, images_uint8: np.ndarray, device: torch.device,
                   batch_size: int = 256) -> torch.Tensor:
    """uint8 images (N, H, W, C) -> fused features (N, D) on the CPU, the input shaped as `first` takes it."""
    with evaluating(fused.to(device)):
        return torch.cat([fused.pooled(pixels(first, images_uint8[start : start + batch_size], device)).float().cpu()
                          for start in range(0, len(images_uint8), batch_size)])


def fusion_subject(targets: list[EvalTarget], source: ImageSource, device: torch.device,
                   seed: int = 0) -> AttackSubject:
    """The fused backbones + a linear probe on their concatenated clean training features. Pixels arrive in the
    first target's format; the normalisations live in the members, so the attacked model's own is the identity."""
    source.require_labels("a fused probe")
    fused = fuse(targets, source)
    features = fused_features(fused, targets[0], source.train.images, device)
    labels = as_labels(source.train.labels)
    num_classes = int(max(labels.max(), torch.as_tensor(source.test.labels).max())) + 1
    probe = fit_linear_probe(features, labels, num_classes, seed)
    channels = targets[0].in_chans
    model = AttackedModel(BackboneWithHead(fused, ProbeHead(probe)), torch.zeros(channels), torch.ones(channels))
    return AttackSubject(model.to(device).eval(), num_classes, "linear",
                         {"l2": probe.l2, "fused": [target.label for target in targets],
                          "feature_dims": [int(target.backbone.embed_dim) for target in targets]})
