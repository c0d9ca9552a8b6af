"""The open-vocabulary detector's machinery: training a CenterNet head (eval/centernet.py) on frozen or fine-tuned
feature maps, decoding scored detections, and the joint space's region scores.

Frozen: the maps of every training image are extracted once and standardised per channel (as the dense
probe's), and only the head trains. Fine-tuned: a copy of the backbone trains with the head (its learning
rate scaled by `backbone_lr_scale`), on exactly the resized images the frozen maps came from (no augmentation:
crops and flips would move the boxes), with its batch norm frozen at its running statistics (Detectron2's
FrozenBN for small detection batches); the standardisation stays the frozen maps' affine map. So at its first
step the fine-tuned detector computes exactly the frozen probe's maps, and with `backbone_lr_scale=0` it is the
frozen probe. (Batch statistics in training, as before, fed the head maps on another scale than the frozen
standardisation assumed (mean 20, std 51 on a random tinycnn) and than its eval-mode test maps: AP50 fell from
90 to 9.) The evaluated backbone is never modified.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import roi_align

from pretrainlab.eval.centernet import CenterNetHead, Targets, decode_peaks, detection_loss
from pretrainlab.eval.classifier_training import (
    FeatureInputs,
    ImageInputs,
    TrainingSettings,
    default_parameter_groups,
    fit,
)
from pretrainlab.eval.detection_ap import Boxes
from pretrainlab.eval.features import evaluating, input_batches
from pretrainlab.eval.image_text import ImageTextModel
from pretrainlab.eval.target import EvalTarget


class MapDetector(nn.Module):
    """A backbone's feature map number `layer`, standardised by fixed per-channel statistics (1, C, 1, 1), into a
    CenterNet head: images (B, C_in, S, S) -> the head's outputs."""

    def __init__(self, backbone: nn.Module, head: CenterNetHead, layer: int, channel_mean: torch.Tensor,
                 channel_std: torch.Tensor) -> None:
        super().__init__()
        self.backbone, self.head, self.layer = backbone, head, layer
        self.register_buffer("channel_mean", channel_mean)
        self.register_buffer("channel_std", channel_std)

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.head.logit_scale

    def maps(self, x: torch.Tensor) -> torch.Tensor:
        return (self.backbone.feature_maps(x)[self.layer].float() - self.channel_mean) / self.channel_std

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.head(self.maps(x))

    def train(self, mode: bool = True) -> MapDetector:
        """Train mode everywhere except the backbone's batch norm, which keeps normalising with its running
        statistics: the fixed standardisation was measured through them."""
        super().train(mode)
        for module in self.backbone.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
        return self


class UnaugmentedInputs(ImageInputs):
    """Training batches equal evaluation batches (the images resized as for the frozen maps): boxes stay put."""

    def train_batch(self, indices: np.ndarray, generator: torch.Generator) -> torch.Tensor:
        return self.eval_batch(indices)


def fit_detector(model: CenterNetHead | MapDetector, inputs: FeatureInputs | ImageInputs, targets: Targets,
                 seen_texts: torch.Tensor, settings: TrainingSettings, device: torch.device, seed: int,
                 groups: list[dict[str, Any]] | None = None) -> float:
    """Trains `model` on the targets of the inputs' images; seen_texts (K_seen, E). Returns the last epoch's loss."""
    targets, seen_texts = targets.to(device), seen_texts.to(device)

    def loss(trained: CenterNetHead | MapDetector, batch: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        chosen = Targets(*(getattr(targets, name)[indices] for name in Targets.__dataclass_fields__))
        return detection_loss(trained(batch), chosen, seen_texts, trained.logit_scale)

    return fit(model, inputs, loss, settings, device, seed, groups)[-1]


def finetune_detector(target: EvalTarget, head: CenterNetHead, images: np.ndarray, layer: int,
                      standardisation: tuple[torch.Tensor, torch.Tensor], normalise: tuple[torch.Tensor, torch.Tensor],
                      size: int, settings: TrainingSettings, backbone_lr_scale: float,
                      device: torch.device) -> tuple[MapDetector, UnaugmentedInputs, list[dict[str, Any]]]:
    """A detector on a COPY of the target's backbone, its un-augmented training inputs (N images) and optimiser
    groups (the backbone's learning rate scaled by `backbone_lr_scale`, weight decay on matrices only)."""
    detector = MapDetector(copy.deepcopy(target.backbone), head, layer, *standardisation)
    inputs = UnaugmentedInputs(images, target.in_chans, size, *normalise, device, settings.view(size).plain())
    groups = [{**group, "lr_scale": backbone_lr_scale}
              for group in default_parameter_groups(detector.backbone, settings.weight_decay)]
    return detector, inputs, groups + default_parameter_groups(detector.head, settings.weight_decay)


@torch.no_grad()
def finetuned_maps(target: EvalTarget, detector: MapDetector, images: np.ndarray,
                   normalise: tuple[torch.Tensor, torch.Tensor], size: int, device: torch.device) -> torch.Tensor:
    """Standardised maps (N, C, h, w) on the CPU of the fine-tuned backbone, in eval mode."""
    with evaluating(detector):
        return torch.cat([detector.maps(x).cpu() for x in input_batches(target, images, *normalise, device, size, 64)])


def region_probabilities(model: ImageTextModel, last_maps: torch.Tensor, boxes: torch.Tensor,
                         image_size: tuple[int, int], texts: torch.Tensor) -> torch.Tensor:
    """The joint space's class probabilities (B, P, K) of boxes (B, P, 4) in pixels, pooled from raw last maps
    (B, C, h, w) by RoI-Align."""
    batch, peaks = boxes.shape[:2]
    scale = last_maps.shape[2] / image_size[0]  # pixels -> cells of the last map
    rois = torch.cat([torch.arange(batch).repeat_interleave(peaks)[:, None].float(), boxes.reshape(-1, 4)], 1)
    pooled = roi_align(last_maps.float(), rois, output_size=2, spatial_scale=scale, aligned=True).mean(dim=(2, 3))
    embeddings = F.normalize(pooled @ model.image_projection.T.float(), dim=1)  # (B P, E)
    return (model.logit_scale * embeddings @ texts.T).softmax(dim=1).reshape(batch, peaks, -1)


def split_boxes(boxes: np.ndarray, keep: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Pixel boxes (N, M, 4) and labels (N, M): index into `keep` for its classes' boxes, -1 for the others."""
    lookup = np.full(max(int(boxes[..., 0].max()), max(keep) + 1) + 1, -1)  # a kept class may have no box here
    lookup[np.array(keep) + 1] = np.arange(len(keep))
    return boxes[..., 1:].astype(np.float32), lookup[boxes[..., 0]]


def ground_truth(boxes: np.ndarray) -> Boxes:
    """Every object of a split's boxes (N, M, 5) as a flat list with 0-based labels."""
    images, slots = np.nonzero(boxes[..., 0])
    return Boxes(images, boxes[images, slots, 0] - 1, boxes[images, slots, 1:].astype(np.float64))


def flat_detections(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]) -> Boxes:
    image, label, boxes, score = (np.concatenate([part[i] for part in parts]) for i in range(4))
    return Boxes(image, label, boxes, score)


@torch.no_grad()
def detect(head: CenterNetHead, maps: torch.Tensor, texts: torch.Tensor, settings: dict[str, Any],
           joint: tuple[ImageTextModel, torch.Tensor, torch.Tensor] | None = None,
           batch_size: int = 64) -> tuple[Boxes, Boxes]:
    """Class-scored detections and class-agnostic ones (label 0, objectness) of standardised maps (N, C, h, w).

    settings: stride (x, y) pixels per cell, image_size (H, W), peaks, max_detections; joint: the run's
    space, raw last maps (N, C', h', w') and per-class ensemble weights (K,), for the region scores."""
    head.eval()
    device = next(head.parameters()).device
    stride = torch.tensor(settings["stride"] * 2, dtype=torch.float32)  # (x, y, x, y)
    height, width = settings["image_size"]
    scored, agnostic = [], []
    for start in range(0, len(maps), batch_size):
        outputs = head(maps[start : start + batch_size].to(device))
        objectness, boxes, embeddings = (t.float().cpu() for t in decode_peaks(outputs, settings["peaks"]))
        boxes = boxes * stride
        boxes[..., 0::2], boxes[..., 1::2] = boxes[..., 0::2].clamp(0, width), boxes[..., 1::2].clamp(0, height)
        probabilities = (head.logit_scale.exp().cpu() * embeddings @ texts.T).softmax(dim=-1)  # (B, P, K)
        if joint is not None:
            model, last_maps, weights = joint
            region = region_probabilities(model, last_maps[start : start + batch_size], boxes, (height, width), texts)
            probabilities = probabilities ** (1 - weights) * region**weights
        scores = objectness[..., None] * probabilities  # (B, P, K)
        batch, peaks, classes = scores.shape
        top = scores.flatten(1).topk(min(settings["max_detections"], peaks * classes), dim=1)
        images = np.repeat(np.arange(start, start + batch), top.indices.shape[1])
        chosen = boxes[torch.arange(batch)[:, None], top.indices // classes]  # (B, T, 4)
        scored.append((images, (top.indices % classes).reshape(-1).numpy(), chosen.reshape(-1, 4).double().numpy(),
                       top.values.reshape(-1).numpy()))
        agnostic.append((np.repeat(np.arange(start, start + batch), peaks), np.zeros(batch * peaks, dtype=np.int64),
                         boxes.reshape(-1, 4).double().numpy(), objectness.reshape(-1).numpy()))
    return flat_detections(scored), flat_detections(agnostic)
