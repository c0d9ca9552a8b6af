"""`cka`: debiased minibatch linear CKA between every pair of layers, and against a second backbone (--against).

Layers: every output of timm's forward_intermediates (stages of a CNN, blocks of a transformer) and the pooled
features. Records: `adjacent` (mean CKA of consecutive layers: how gradually the representation changes) and,
with --against, `pooled_vs_against` (CKA of the two pooled representations) and `best_match` (mean over this
backbone's layers of its most similar layer of the other).

Options: cka_images (default 1024 test images), cka_batch (images per minibatch, default 256).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from pretrainlab.eval.features import evaluating, input_batches, normalisation
from pretrainlab.eval.target import EvalTarget
from pretrainlab.explain.context import ExplainContext
from pretrainlab.explain.figures import heatmap
from pretrainlab.explain.model import representation_names, representations
from pretrainlab.explain.registry import AnalysisOutput, register_analysis
from pretrainlab.explain.similarity import MinibatchCKA


def layer_outputs(context: ExplainContext, target: EvalTarget, images: np.ndarray, batch: int):  # noqa: ANN201
    """Yields each minibatch's list of layer outputs (on the CPU) of `target` on `images` (N, H, W, C)."""
    mean, std = normalisation(target, context.source.train.images)
    size = context.size if target is context.target else target.img_size
    with evaluating(target.backbone.to(context.device)):
        for x in input_batches(target, images, mean, std, context.device, size, batch):
            # no_grad per batch, never across a yield: two interleaved generators would restore each other's
            # grad mode in the wrong order and leave gradients off for the analyses after this one
            with torch.no_grad():
                outputs = [out.float().cpu() for out in representations(target.backbone, x)]
            yield outputs


@register_analysis("cka", options=("cka_images", "cka_batch"))
def cka(context: ExplainContext) -> AnalysisOutput:
    started = time.perf_counter()
    split = context.split()
    count = min(int(context.option("cka_images", 1024)), len(split))
    batch = max(4, min(int(context.option("cka_batch", 256)), count))
    images = np.ascontiguousarray(split.images[np.random.default_rng(context.settings.seed).permutation(len(split))
                                               [: count - count % batch]])
    other = context.against
    within, across = MinibatchCKA(), MinibatchCKA()
    streams = [layer_outputs(context, context.target, images, batch)]
    if other is not None:
        streams.append(layer_outputs(context, other, images, batch))
    count_a = count_b = 0
    for outputs in context.progress(zip(*streams, strict=True), "cka batches", total=len(images) // batch):
        within.update(outputs[0], outputs[0])
        count_a = len(outputs[0])
        if other is not None:
            across.update(outputs[0], outputs[1])
            count_b = len(outputs[1])
    names = [*representation_names(context.backbone, count_a - 1), "pooled"]
    matrix = within.value().numpy()
    caption = (f"debiased minibatch linear CKA (2010.15327), {len(images)} test images of {context.source.spec} in "
               f"batches of {batch}, {context.size} px, seed {context.settings.seed}")
    output = AnalysisOutput()
    arrays = {"cka": matrix, "layers": np.array(names)}
    output.files.append(heatmap(context.path("cka.png"), matrix, names, names,
                                f"CKA between layers of {context.target.label}", caption))
    adjacent = float(np.mean(np.diagonal(matrix, offset=1))) if len(names) > 1 else 1.0
    settings = {"cka_images": len(images), "cka_batch": batch}
    output.results.append(context.result("cka", "adjacent", adjacent, started, **settings))
    if other is not None:
        other_names = [*representation_names(other.backbone, count_b - 1), "pooled"]
        cross = across.value().numpy()
        arrays.update(cka_against=cross, against_layers=np.array(other_names), against=np.array(other.label))
        output.files.append(heatmap(context.path("cka_against.png"), cross, names, other_names,
                                    f"CKA: {context.target.label} (rows) vs {other.label}", caption))
        against = {**settings, "against": other.label}
        output.results.append(context.result("cka", "pooled_vs_against", float(cross[-1, -1]), started, **against))
        output.results.append(context.result("cka", "best_match", float(cross.max(axis=1).mean()), started, **against))
    output.files.append(context.save_arrays("cka", **arrays))
    return output
