"""`attention`: attention maps, mean attention distance and NMI per layer and head, and local / hybrid / global layers.

Records: `mean_distance` (px, over layers and heads), `nmi_last` (the last layer's head-averaged NMI), and the
number of `local_layers`, `hybrid_layers`, `global_layers`. Options: attention_images (default: --images),
local_nmi, global_nmi (the class thresholds, see explain/attention.py).
"""

from __future__ import annotations

import time

import numpy as np

from pretrainlab.explain.attention import GLOBAL_NMI, LAYER_CLASSES, LOCAL_NMI, attention_patterns
from pretrainlab.explain.context import ExplainContext, resize_pixels
from pretrainlab.explain.figures import attention_figure
from pretrainlab.explain.registry import AnalysisOutput, register_analysis, tokens_needed


@register_analysis("attention", options=("attention_images", "local_nmi", "global_nmi"), needs=tokens_needed)
def attention(context: ExplainContext) -> AnalysisOutput:
    started = time.perf_counter()
    split = context.split()
    count = min(int(context.option("attention_images", context.settings.images)), len(split))
    chosen = np.sort(np.random.default_rng(context.settings.seed).choice(len(split), count, replace=False))
    images = np.ascontiguousarray(split.images[chosen])
    thresholds = (float(context.option("local_nmi", LOCAL_NMI)), float(context.option("global_nmi", GLOBAL_NMI)))
    batches = list(context.progress(context.batches(images), "attention batches"))
    patterns = attention_patterns(context.backbone, batches, *thresholds)
    output = AnalysisOutput()
    output.files.append(context.save_arrays(
        "attention", mean_distance=patterns.distance, nmi=patterns.nmi, layer_class=np.array(patterns.classes),
        example_attention=patterns.example, grid=np.array(patterns.grid), image_index=chosen,
        **({} if patterns.cls_attention is None else {"example_class_token_attention": patterns.cls_attention})))
    caption = (f"{context.target.label} on {count} test images of {context.source.spec}, {context.size} px, "
               f"{patterns.grid[0]}x{patterns.grid[1]} patches, seed {context.settings.seed}; layer class from the "
               f"head-mean NMI (local >= {thresholds[0]}, global < {thresholds[1]})")
    title = f"attention patterns of {context.target.label}: " + ", ".join(
        f"{patterns.classes.count(name)} {name}" for name in LAYER_CLASSES)
    output.files.append(attention_figure(context.path("attention.png"), patterns.distance, patterns.nmi,
                                         patterns.classes, patterns.example, patterns.cls_attention, patterns.grid,
                                         resize_pixels(images[:1], context.size)[0], thresholds, title, caption))
    settings = {"attention_images": count, "local_nmi": thresholds[0], "global_nmi": thresholds[1]}
    output.results += [
        context.result("attention", "mean_distance", float(patterns.distance.mean()), started, **settings),
        context.result("attention", "nmi_last", float(patterns.nmi[-1].mean()), started, **settings),
        *[context.result("attention", f"{name}_layers", patterns.classes.count(name), started, **settings)
          for name in LAYER_CLASSES],
    ]
    return output
