"""Dense probe: a linear (1x1 convolution) head on frozen feature maps, trained for per-pixel labels.

The linear segmentation probe of DINOv2 (Oquab et al., "DINOv2: Learning Robust Visual Features
without Supervision", arXiv 2304.07193, the "lin." setting): the frozen backbone's feature map
(`Backbone.feature_maps`, the last one by default) of every image is computed once and standardised
per channel with the training maps' statistics; a 1x1 convolution gives class logits at the map's
resolution, upsampled bilinearly to the mask size and trained with per-pixel cross-entropy (mask id
255 ignored). At test time the head stays linear in the features.

Metrics on the test split, in percent: `mIoU`, the mean over classes of TP / (TP + FP + FN) from the
pixel confusion matrix (a class absent from both ground truth and prediction is left out of the mean;
the background class counts like any other), and `pixel_accuracy`.

Options: layer (index into feature_maps, default -1); img_size (input size; default: the images' own
size for convolutional backbones, which take any size, and the backbone's size for transformers);
dense_epochs, dense_lr, dense_batch_size, dense_weight_decay, dense_min_steps (the head's AdamW
training); seed.

Noisy masks (data/mask_noise.py): `mask_noise=dilate:2`, `erode:1`, `flip:0.3`, `polygon:2` (or several joined
by "+") corrupts the TRAINING masks only, fixed by `mask_noise_seed` (default 0); the test masks stay clean, and
the record gives the spec, seed and the share of training pixels changed. `adele=true` trains the head with
ADELE (eval/adele.py, arXiv 2110.03740): per-class memorisation onsets from the training IoU curves, label
correction after them and multi-scale consistency (`adele_threshold`, `adele_confidence`, `adele_consistency`).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from pretrainlab.data.mask_noise import apply_mask_noise, parse_mask_noise
from pretrainlab.data.segmentation import IGNORE_INDEX
from pretrainlab.data.source import ImageSource
from pretrainlab.errors import PretrainlabError
from pretrainlab.eval.adele import SCALES, AdeleSettings, AdeleState, adele_loss, end_of_epoch
from pretrainlab.eval.classifier_training import FeatureInputs, TrainingSettings, fit, plan_steps, seeded
from pretrainlab.eval.features import evaluating, input_batches, normalisation
from pretrainlab.eval.protocols import PROTOCOLS, EvalContext, applies_when, takes_options
from pretrainlab.eval.record import EvalResult
from pretrainlab.eval.segmentation_scores import confusion_matrix, iou_per_class, segmentation_scores
from pretrainlab.eval.target import EvalTarget

# A linear head on cached, standardised maps is cheap: train it to convergence. lr 0.1 (AdamW, cosine decay)
# beat 0.01 for random and SimCLR tinycnn alike on composed digits (mIoU 18.1 vs 17.8, 22.7 vs 20.9).
HEAD_DEFAULTS = {"epochs": 10, "lr": 0.1, "batch_size": 32, "weight_decay": 1e-4, "min_steps": 300,
                 "warmup_fraction": 0.0}


def needs_masks(source: ImageSource) -> str | None:
    if source.has_masks:
        return None
    return f"needs per-pixel masks, but dataset '{source.spec}' has none (use seg:PATH or composed:SPEC)"


def num_mask_classes(source: ImageSource) -> int:
    if source.mask_classes is not None:
        return len(source.mask_classes)
    ids = np.union1d(np.unique(source.train.masks), np.unique(source.test.masks))
    ids = ids[ids != IGNORE_INDEX]
    return int(ids.max()) + 1 if len(ids) else 1


def input_size(context: EvalContext) -> int:
    given = context.options.get("img_size")
    if given is not None:
        return int(given)
    return context.target.img_size if context.target.backbone.has_tokens else context.source.image_size[0]


@torch.no_grad()
def extract_feature_maps(target: EvalTarget, images: np.ndarray, mean: torch.Tensor, std: torch.Tensor,
                         device: torch.device, layer: int, size: int, batch_size: int = 64) -> torch.Tensor:
    """images (N, H, W, C) uint8 -> feature map number `layer` (N, C', h, w) float32 on the CPU, in eval mode."""
    outputs = []
    with evaluating(target.backbone.to(device)) as backbone:
        for x in input_batches(target, images, mean, std, device, size, batch_size):
            maps = backbone.feature_maps(x)
            if not -len(maps) <= layer < len(maps):
                raise PretrainlabError(f"option layer={layer} is out of range: backbone '{target.backbone.name}' "
                                       f"gives {len(maps)} feature maps (valid: {-len(maps)}..{len(maps) - 1})")
            outputs.append(maps[layer].float().cpu())
    return torch.cat(outputs)


class LinearDenseHead(nn.Module):
    """Standardised maps (B, C, h, w) -> per-pixel logits (B, K, H, W): a 1x1 convolution, then bilinear upsampling."""

    def __init__(self, channels: int, num_classes: int, out_size: tuple[int, int]) -> None:
        super().__init__()
        self.classify = nn.Conv2d(channels, num_classes, kernel_size=1)
        self.out_size = out_size

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        logits = self.classify(maps)  # (B, K, h, w)
        return F.interpolate(logits, size=self.out_size, mode="bilinear", align_corners=False)


@torch.no_grad()
def test_confusion(head: nn.Module, maps: torch.Tensor, masks: np.ndarray, num_classes: int,
                   device: torch.device, batch_size: int = 64) -> torch.Tensor:
    """Confusion matrix (K, K) of the head's per-pixel argmax on test maps (N, C, h, w) against masks (N, H, W)."""
    head.eval()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    for start in range(0, len(maps), batch_size):
        predicted = head(maps[start : start + batch_size].to(device)).argmax(dim=1)  # (B, H, W)
        truth = torch.from_numpy(masks[start : start + batch_size]).to(device)
        confusion += confusion_matrix(truth, predicted, num_classes)
    return confusion


def standardised_train_maps(context: EvalContext, layer: int, size: int) -> torch.Tensor:
    """Training maps at input size `size`, standardised per channel with their own statistics."""
    mean, std = normalisation(context.target, context.source.train.images)
    train = extract_feature_maps(context.target, context.source.train.images, mean, std, context.device, layer, size)
    channel_mean = train.mean(dim=(0, 2, 3), keepdim=True)  # (1, C, 1, 1)
    return (train - channel_mean) / train.std(dim=(0, 2, 3), keepdim=True).clamp(min=1e-6)


def frozen_maps(context: EvalContext, layer: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Train and test maps, standardised per channel with the training maps' mean and std."""
    mean, std = normalisation(context.target, context.source.train.images)
    train, test = (extract_feature_maps(context.target, split.images, mean, std, context.device, layer, size)
                   for split in (context.source.train, context.source.test))
    channel_mean = train.mean(dim=(0, 2, 3), keepdim=True)  # (1, C, 1, 1)
    channel_std = train.std(dim=(0, 2, 3), keepdim=True).clamp(min=1e-6)
    return (train - channel_mean) / channel_std, (test - channel_mean) / channel_std


def option_flag(options: dict[str, Any], key: str) -> bool:
    value = options.get(key, False)
    if isinstance(value, bool) or value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text not in ("true", "false", "1", "0", "yes", "no"):
        raise PretrainlabError(f"option {key} must be true or false, got {value!r}")
    return text in ("true", "1", "yes")


def training_masks(context: EvalContext, num_classes: int) -> tuple[np.ndarray, dict[str, Any]]:
    """The training masks, corrupted by `mask_noise` when given, and what was done to them."""
    masks, spec = context.source.train.masks, context.options.get("mask_noise")
    try:
        noise_seed = int(context.options.get("mask_noise_seed", 0))
    except (TypeError, ValueError):
        raise PretrainlabError(f"option mask_noise_seed must be an integer, got "
                               f"{context.options['mask_noise_seed']!r}") from None
    if spec is None:
        return masks, {}
    noisy = apply_mask_noise(masks, parse_mask_noise(spec), num_classes, noise_seed)
    changed = float((noisy != masks).mean())
    return noisy, {"mask_noise": str(spec), "mask_noise_seed": noise_seed, "noisy_pixel_share": round(changed, 5)}


def train_with_adele(context: EvalContext, head: nn.Module, train_maps: torch.Tensor, masks: np.ndarray,
                     num_classes: int, settings: TrainingSettings, adele: AdeleSettings, seed: int, layer: int,
                     size: int) -> tuple[list[float], dict[str, Any]]:
    """ADELE's training of the head (eval/adele.py) on maps of the input and of its x0.7 / x1.5 rescalings."""
    scaled = [standardised_train_maps(context, layer, max(8, round(size * scale))) for scale in SCALES]
    noisy = torch.from_numpy(masks).to(context.device)
    state = AdeleState(labels=noisy.long().clone(), noisy=noisy)
    maps_by_scale = [train_maps, *scaled]
    losses = fit(head, FeatureInputs(train_maps, context.device), adele_loss(state, scaled, adele), settings,
                 context.device, seed, on_epoch_end=lambda epoch: end_of_epoch(
                     state, head, maps_by_scale, num_classes, adele, epoch, context.device))
    record = {"threshold": adele.threshold, "confidence": adele.confidence, "consistency": adele.consistency,
              "scales": [1.0, *SCALES], "onsets": {str(c): epoch for c, epoch in sorted(state.onsets.items())},
              "corrected_pixels": state.corrected_pixels,
              "train_iou_curves": [[round(v * 100, 2) for v in curve] for curve in state.curves]}
    return losses, record


@PROTOCOLS.register("dense")
@takes_options("img_size", "layer", "mask_noise", "mask_noise_seed", "adele", "adele_threshold", "adele_confidence",
               "adele_consistency", *TrainingSettings.option_names("dense_"))
@applies_when(needs_masks)
def dense_protocol(context: EvalContext) -> list[EvalResult]:
    started = time.perf_counter()
    seed = int(context.options.get("seed", 0))
    layer, size = int(context.options.get("layer", -1)), input_size(context)
    settings = TrainingSettings.from_options(context.options, prefix="dense_", **HEAD_DEFAULTS)
    source, num_classes = context.source, num_mask_classes(context.source)
    adele = AdeleSettings.from_options(context.options)  # checked even when off: a bad value is refused, not ignored
    adele = adele if option_flag(context.options, "adele") else None
    masks, noise_record = training_masks(context, num_classes)
    train_maps, test_maps = frozen_maps(context, layer, size)
    with seeded(seed, context.device):
        head = LinearDenseHead(train_maps.shape[1], num_classes, source.image_size)
    if adele is not None:
        losses, adele_record = train_with_adele(context, head, train_maps, masks, num_classes, settings, adele, seed,
                                                layer, size)
        noise_record["adele"] = adele_record
    else:
        train_masks = torch.from_numpy(masks).to(context.device)  # (N, H, W) uint8

        def loss(model: nn.Module, maps: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
            return F.cross_entropy(model(maps), train_masks[indices].long(), ignore_index=IGNORE_INDEX)

        losses = fit(head, FeatureInputs(train_maps, context.device), loss, settings, context.device, seed)
    confusion = test_confusion(head, test_maps, source.test.masks, num_classes, context.device)
    miou, pixel_accuracy = segmentation_scores(confusion)
    details: dict[str, Any] = {
        **context.base_settings(), "seed": seed, "layer": layer, "input_size": size,
        "feature_map": list(train_maps.shape[1:]), "classes": num_classes, "head": "1x1 conv, bilinear upsampling",
        "epochs": plan_steps(len(train_maps), settings)[2], "lr": settings.lr, "batch_size": settings.batch_size,
        "final_train_loss": round(losses[-1], 5), **noise_record,
        "per_class_iou": [None if np.isnan(value) else round(float(value) * 100, 3)
                          for value in iou_per_class(confusion).tolist()],
    }
    seconds = time.perf_counter() - started
    return [EvalResult("dense", source.spec, metric, value, seconds, settings=details, backbone=context.target.label)
            for metric, value in (("mIoU", miou), ("pixel_accuracy", pixel_accuracy))]
