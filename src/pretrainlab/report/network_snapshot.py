"""Feature maps of a few stored images at every stage of a backbone, precomputed for the page's network view.

The interactive view follows "CNN Explainer: Learning Convolutional Neural Networks with Interactive
Visualization" (Wang et al., arXiv 2004.15004), for any backbone's `feature_maps` rather than one fixed
Tiny-VGG: the page needs no server, so the maps are computed once, here, and embedded as small PNGs.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from pretrainlab.atomic import atomic_path
from pretrainlab.data.source import ImageSet, ImageSource
from pretrainlab.eval.features import evaluating, input_batches, normalisation
from pretrainlab.eval.target import EvalTarget
from pretrainlab.report.html import png_data

log = logging.getLogger(__name__)

NETWORK_FILE = "network.json"
IMAGES = 4
MAPS_PER_STAGE = 16
MAX_STAGES = 8
MAX_MAP_SIDE = 32  # larger maps are average-pooled to this side: the page stays small at 224 px inputs


def grey_png(array: np.ndarray) -> str:
    """(H, W) float -> base64 PNG, scaled to its own min..max."""
    low, high = float(array.min()), float(array.max())
    scaled = np.zeros_like(array) if high <= low else (array - low) / (high - low)
    buffer = io.BytesIO()
    Image.fromarray((scaled * 255).round().astype(np.uint8)).save(buffer, format="PNG", optimize=True)
    return png_data(buffer.getvalue())


def image_png(image: np.ndarray) -> str:
    """(H, W, C) uint8 -> base64 PNG."""
    buffer = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image[..., :3]).save(buffer, format="PNG")
    return png_data(buffer.getvalue())


def stage_names(target: EvalTarget, count: int) -> list[str]:
    """timm's feature_info module names when it has one per stage, else "stage N"."""
    info = getattr(getattr(target.backbone, "model", None), "feature_info", None)
    try:
        modules = [entry["module"] for entry in info] if info is not None else []
    except (TypeError, KeyError):
        modules = []
    return modules[-count:] if len(modules) >= count else [f"stage {i + 1}" for i in range(count)]


def channel_entries(maps: torch.Tensor) -> list[dict[str, Any]]:
    """maps (C, H, W) of one image -> the MAPS_PER_STAGE most active channels with their statistics."""
    maps = torch.nan_to_num(maps)  # a diverged network's inf/NaN would make the page's JSON invalid
    activity = maps.abs().mean(dim=(1, 2))  # (C,)
    order = torch.argsort(activity, descending=True)[:MAPS_PER_STAGE]
    small = F.adaptive_avg_pool2d(maps, MAX_MAP_SIDE) if max(maps.shape[1:]) > MAX_MAP_SIDE else maps
    entries = []
    for channel in order.tolist():
        values = maps[channel]
        entries.append({"channel": channel, "png": grey_png(small[channel].numpy()),
                        "mean": float(values.mean()), "std": float(values.std()) if values.numel() > 1 else 0.0,
                        "min": float(values.min()), "max": float(values.max()),
                        "active": float((values > 0).float().mean())})
    return entries


@torch.no_grad()
def network_snapshot(target: EvalTarget, images: np.ndarray, labels: list[str], mean: torch.Tensor,
                     std: torch.Tensor, device: torch.device) -> dict[str, Any]:
    """images (N, H, W, C) uint8 -> the stages' shapes and, per image, its input and most active maps."""
    inputs = next(input_batches(target, images, mean, std, device, target.img_size, len(images)))
    with evaluating(target.backbone.to(device)) as backbone:
        stages = [maps.float().cpu() for maps in backbone.feature_maps(inputs)]  # [(N, C_i, H_i, W_i)]
    stages = [maps for maps in stages if maps.dim() == 4]
    if len(stages) > MAX_STAGES:
        keep = np.linspace(0, len(stages) - 1, MAX_STAGES).round().astype(int)
        stages = [stages[i] for i in sorted(set(keep.tolist()))]
    names = stage_names(target, len(stages))
    return {
        "stages": [{"name": name, "shape": list(maps.shape[1:])} for name, maps in zip(names, stages, strict=True)],
        "images": [{"label": label, "input": image_png(image),
                    "stages": [channel_entries(maps[index]) for maps in stages]}
                   for index, (image, label) in enumerate(zip(images, labels, strict=True))],
    }


def decoded_training_images(source: ImageSource) -> ImageSet:
    """The training split as decoded images; a streamed shard set (`shards:`) offers its decoded preview."""
    preview = getattr(source, "preview", None)
    return preview if preview is not None else source.train


def pick_images(source: ImageSource) -> tuple[np.ndarray, list[str]]:
    """Up to IMAGES test images (training images when there is no test split), one per class when labelled."""
    split = source.test if source.test is not None else decoded_training_images(source)
    if split.labels is None:
        chosen = list(range(min(IMAGES, len(split))))
        return split.images[chosen], [f"image {i}" for i in chosen]
    labels = np.asarray(split.labels)
    chosen = [int(np.flatnonzero(labels == value)[0]) for value in np.unique(labels)[:IMAGES]]
    names = source.classes or []
    return split.images[chosen], [names[labels[i]] if labels[i] < len(names) else f"class {labels[i]}"
                                  for i in chosen]


def write_network_snapshot(run_dir: Path, target: EvalTarget, source: ImageSource, device: torch.device) -> Path | None:
    """RUN/network.json for the page's network view; None (and a warning) when the backbone has no feature maps."""
    images, labels = pick_images(source)
    mean, std = normalisation(target, decoded_training_images(source).images)
    try:
        snapshot = network_snapshot(target, images, labels, mean, std, device)
    except (NotImplementedError, AttributeError, RuntimeError, TypeError, ValueError) as error:
        log.warning("no network view for %s: its feature maps are not available (%s)", target.label, error)
        return None
    if not snapshot["stages"]:
        return None
    path = Path(run_dir) / NETWORK_FILE
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(snapshot, separators=(",", ":")))
    return path
