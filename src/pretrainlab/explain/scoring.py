"""Attribution maps of several methods on the explained images, each scored by the quality metrics.

Shared by the `cam` and `attribution` analyses. Every (image, class) pair is explained by every method that
applies; ROAD and insertion/deletion need a classifier, pointing game and box IoU need masks (composed:
canvases), so each is measured where it can be and said otherwise.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from pretrainlab.errors import PretrainlabError
from pretrainlab.explain.attribution import Explained, attribution_maps, not_applicable
from pretrainlab.explain.context import ExplainContext
from pretrainlab.explain.figures import map_grid
from pretrainlab.explain.model import PooledBackbone
from pretrainlab.explain.quality import ROAD_PERCENTILES, box_ious, insertion_deletion, pointing_hits, road_scores
from pretrainlab.explain.registry import AnalysisOutput

log = logging.getLogger(__name__)

QUALITY_OPTIONS = ("road_percentiles", "insertion_steps", "pointing_tolerance", "box_threshold")
# metric -> higher is better
METRIC_DIRECTIONS = {"road": True, "road_morf": False, "road_lerf": True, "insertion": True, "deletion": False,
                     "pointing": True, "box_iou": True}


def explained_model(context: ExplainContext) -> Explained:
    classifier = context.classifier.model if context.has_classes else None
    return Explained(classifier, PooledBackbone(context.backbone), context.layer, context.reshape,
                     int(context.option("rise_masks", 512)), context.settings.seed)


def quality_metrics(context: ExplainContext, maps: np.ndarray, image_index: np.ndarray,
                    classes: np.ndarray) -> dict[str, np.ndarray]:
    """Per-item scores (M,) of one method's maps (M, S, S)."""
    scores: dict[str, np.ndarray] = {}
    inputs = context.inputs
    if context.has_classes:
        classifier = context.classifier
        x = inputs.x[image_index]
        percentiles = tuple(context.option("road_percentiles", ROAD_PERCENTILES))
        morf, lerf = road_scores(classifier.model, x, maps, classes, classifier.multilabel, percentiles)
        scores.update(road_morf=morf, road_lerf=lerf, road=(lerf - morf) / 2)
        insertion, deletion = insertion_deletion(classifier.model, x, maps, classes, classifier.multilabel,
                                                 int(context.option("insertion_steps", 16)))
        scores.update(insertion=insertion, deletion=deletion)
    if inputs.masks is not None and context.has_classes:
        masks = inputs.masks[image_index]
        mask_ids = np.array([context.mask_id(int(c)) for c in classes])
        tolerance = int(context.option("pointing_tolerance", max(1, round(context.size * 15 / 224))))
        scores["pointing"] = pointing_hits(maps, masks, mask_ids, tolerance).astype(np.float64)
        scores["box_iou"] = box_ious(maps, masks, mask_ids, float(context.option("box_threshold", 0.5)))
    return scores


def score_methods(context: ExplainContext, analysis: str, methods: list[str]) -> AnalysisOutput:
    """Maps of every applicable method, their quality, an .npz of both and one figure; one record per metric."""
    explained = explained_model(context)
    image_index, classes = context.explained
    x = context.inputs.x[image_index]
    output = AnalysisOutput()
    arrays: dict[str, np.ndarray] = {"image_index": image_index, "classes": classes}
    maps_by_method: dict[str, np.ndarray] = {}
    for method in context.progress(methods, f"{analysis} maps"):
        if (reason := not_applicable(method, explained)) is not None:
            log.info("%s: %s skipped: it %s", analysis, method, reason)
            continue
        started = time.perf_counter()
        maps = attribution_maps(method, explained, x, classes, context.settings.batch_size)
        maps_by_method[method] = maps
        arrays[f"maps_{method}"] = maps
        for metric, values in quality_metrics(context, maps, image_index, classes).items():
            arrays[f"{metric}_{method}"] = values
            output.results.append(context.result(
                analysis, f"{metric}@{method}", float(np.mean(values)) * (100 if metric == "pointing" else 1), started,
                METRIC_DIRECTIONS[metric], layer=context.layer_name, explained=len(classes)))
    if not maps_by_method:
        raise PretrainlabError(f"no {analysis} method applies to this backbone and data ({', '.join(methods)})")
    output.files.append(context.save_arrays(analysis, **arrays))
    pixels = context.inputs.pixels[image_index]
    titles = [f"class {c}" for c in classes]
    where = f" at layer {context.layer_name}" if analysis == "cam" else " (input gradients; RISE: random masks)"
    caption = (f"{context.target.label} on {context.source.spec}; {analysis} maps{where}, "
               f"{context.size} px, seed {context.settings.seed}; the explained class per row")
    output.files.append(map_grid(context.path(f"{analysis}.png"), pixels, maps_by_method, titles, caption))
    return output


def method_list(context: ExplainContext, option: str, default: tuple[str, ...]) -> list[str]:
    value = context.option(option, list(default))
    return [value] if isinstance(value, str) else [str(item) for item in value]
