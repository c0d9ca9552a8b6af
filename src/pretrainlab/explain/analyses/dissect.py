"""`dissect`: network dissection of the explained layer; top-activating patches of its channels.

On data with masks (composed:, seg:) every channel gets its IoU with each mask class (explain/dissect.py) and a
label when the IoU exceeds 0.04. Records: `labelled_channels` (% of channels with a label), `mean_best_iou`,
`concepts` (distinct labels), and on any data `dead_channels` (% of channels never above 0 on these images; lower
is better). Options: dissect_images (default 500 test images).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from pretrainlab.explain.context import ExplainContext, resize_masks, resize_pixels
from pretrainlab.explain.dissect import LABEL_IOU, dissect, top_patches
from pretrainlab.explain.figures import image_grid
from pretrainlab.explain.model import PooledBackbone
from pretrainlab.explain.registry import AnalysisOutput, register_analysis
from pretrainlab.explain.visualize import channel_activation

SHOWN_CHANNELS = 12


@register_analysis("dissect", options=("dissect_images",))
def dissect_layer(context: ExplainContext) -> AnalysisOutput:
    started = time.perf_counter()
    split = context.split()
    count = min(int(context.option("dissect_images", 500)), len(split))
    chosen = np.sort(np.random.default_rng(context.settings.seed).choice(len(split), count, replace=False))
    images = np.ascontiguousarray(split.images[chosen])
    model = PooledBackbone(context.backbone).eval()
    with torch.no_grad():
        activations = torch.cat([channel_activation(model, context.layer, context.reshape, x).float().cpu()
                                 for x in context.progress(context.batches(images), "dissect batches")])
    output = AnalysisOutput()
    arrays: dict[str, np.ndarray] = {"image_index": chosen}
    dead = float((activations.amax(dim=(0, 2, 3)) <= 0).double().mean() * 100)
    settings = {"layer": context.layer_name, "dissect_images": count}
    output.results.append(context.result("dissect", "dead_channels", dead, started, False, **settings))
    names = context.source.mask_classes
    shown = list(range(min(SHOWN_CHANNELS, activations.shape[1])))
    labels = {}
    if split.masks is not None:
        masks = resize_masks(split.masks[chosen], context.size)
        concepts = len(names) if names else int(masks.max()) + 1
        result = dissect(activations, masks, concepts)
        arrays.update(iou=result.iou, best_concept=result.best, best_iou=result.best_iou, labelled=result.labelled)
        shown = [int(c) for c in np.argsort(-result.best_iou)[: len(shown)]]  # the most interpretable channels
        labels = {c: f"{names[result.best[c]] if names else result.best[c]} {result.best_iou[c]:.2f}" for c in shown}
        output.results += [
            context.result("dissect", "labelled_channels", float(result.labelled.mean() * 100), started, **settings),
            context.result("dissect", "mean_best_iou", float(result.best_iou.mean()), started, **settings),
            context.result("dissect", "concepts", len(set(result.best[result.labelled].tolist())), started,
                           **settings),
        ]
    crops = top_patches(activations, resize_pixels(images, context.size), shown)
    pictures = [crop for row in crops for crop in row]
    titles = [f"ch {c}" + (f": {labels[c]}" if c in labels and i == 0 else "") for c, row in zip(shown, crops,
                                                                                                  strict=True)
              for i in range(len(row))]
    caption = (f"{context.target.label}, layer {context.layer_name}: top-activating patches of {count} test images of "
               f"{context.source.spec}" + (f"; label = best mask class and its IoU (labelled when > {LABEL_IOU})"
                                            if labels else "") + f", seed {context.settings.seed}")
    output.files.append(image_grid(context.path("dissect.png"), pictures, titles, caption,
                                   columns=len(crops[0]) if crops else 1))
    output.files.append(context.save_arrays("dissect", **arrays))
    return output
