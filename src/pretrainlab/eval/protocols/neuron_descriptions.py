"""Neuron descriptions (after MILAN, arXiv 2201.11114): every channel of a layer described by the object word
with the highest PMI with its active regions, scored against the known objects of held-out images.

The machinery is language/neuron_descriptions.py. Needs a source with object masks and class names
(`composed:SPEC` canvases, whose synthetic captions use the class names as object words; or `seg:PATH`).
Training-split images choose each channel's threshold and description; test-split images measure:
- `agreement`: mean IoU (percent) between each channel's active region and the mask of its described class;
- `agreement_over_chance`: the same minus the mean IoU of the regions with every class (a random description).

Options: layer (index into the backbone's feature maps, default -1: the deepest), quantile (0.99),
max_images (training images used to describe, default 1000), img_size (extract at this size).
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import torch

from pretrainlab.data.source import ImageSource
from pretrainlab.eval.features import evaluating, input_batches, normalisation
from pretrainlab.eval.protocols import PROTOCOLS, EvalContext, applies_when, takes_options
from pretrainlab.eval.record import EvalResult
from pretrainlab.eval.target import EvalTarget
from pretrainlab.language.neuron_descriptions import NeuronDescription, agreement, describe_neurons


def needs_object_masks(source: ImageSource) -> str | None:
    if source.has_masks and source.test is not None and (source.mask_classes or source.classes):
        return None
    return (f"needs object masks with class names, but dataset '{source.spec}' has none "
            "(use composed:SPEC or seg:PATH)")


def object_names(source: ImageSource) -> list[str]:
    """Names of mask ids 1..K (id 0 is the background)."""
    return list(source.mask_classes[1:]) if source.mask_classes else list(source.classes)


@torch.no_grad()
def layer_activations(target: EvalTarget, images: np.ndarray, source: ImageSource, layer: int,
                      device: torch.device, batch_size: int = 128) -> torch.Tensor:
    """Feature maps (N, C, h, w) of one layer (index into `feature_maps`) for uint8 images (N, H, W, C)."""
    mean, std = normalisation(target, source.train.images)
    with evaluating(target.backbone.to(device)) as backbone:
        return torch.cat([backbone.feature_maps(x)[layer].float().cpu()
                          for x in input_batches(target, images, mean, std, device, target.img_size, batch_size)])


def describe_target(target: EvalTarget, source: ImageSource, device: torch.device, layer: int = -1,
                    quantile: float = 0.99, max_images: int = 1000) -> tuple[list[NeuronDescription], float, float]:
    """(descriptions with held-out agreement, mean agreement %, chance agreement %) for one layer of `target`."""
    names = object_names(source)
    train = slice(0, min(max_images, len(source.train)))
    maps = layer_activations(target, source.train.images[train], source, layer, device)
    descriptions, cutoffs = describe_neurons(maps, torch.from_numpy(source.train.masks[train]), names, quantile)
    test_maps = layer_activations(target, source.test.images, source, layer, device)
    mean, chance = agreement(descriptions, test_maps, torch.from_numpy(source.test.masks), names, cutoffs)
    return descriptions, mean, chance


@PROTOCOLS.register("neuron_descriptions")
@applies_when(needs_object_masks)
@takes_options("layer", "quantile", "max_images", "img_size")
def neuron_descriptions_protocol(context: EvalContext) -> list[EvalResult]:
    started = time.perf_counter()
    options = context.options
    layer, quantile = int(options.get("layer", -1)), float(options.get("quantile", 0.99))
    target = context.target if "img_size" not in options else replace(context.target, img_size=int(options["img_size"]))
    descriptions, mean, chance = describe_target(target, context.source, context.device, layer, quantile,
                                                 int(options.get("max_images", 1000)))
    ranked = sorted(descriptions, key=lambda d: -(d.agreement or 0.0))
    settings = {**context.base_settings(), "img_size": target.img_size, "layer": layer, "quantile": quantile,
                "channels": len(descriptions), "chance_agreement": round(chance, 3),
                "candidates": "object words of the captions (class names)",
                "distinct_descriptions": len({d.description for d in descriptions}),
                "best_described": [{"channel": d.channel, "description": d.description, "pmi": round(d.pmi, 3),
                                    "agreement": round(d.agreement or 0.0, 2)} for d in ranked[:10]]}
    seconds = time.perf_counter() - started
    return [EvalResult("neuron_descriptions", context.source.spec, metric, value, seconds, settings=settings,
                       backbone=context.target.label)
            for metric, value in (("agreement", mean), ("agreement_over_chance", mean - chance))]
