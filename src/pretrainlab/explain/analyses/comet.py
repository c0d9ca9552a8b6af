"""`comet`: fine-tune an inherently explainable selector + predictor (COMET, explain/comet.py) and score its masks.

Trains on `comet_images` training images (class-balanced), tests on up to a quarter as many test images.
Records: `accuracy` (top-1 %, or `mAP` for multi-label data) of the predictor on the masked test images,
`detector_accuracy` / `detector_mAP` (the frozen probe on full images, for reference), `mask_area` (mean mask
value), and on composed: / seg: data `mask_precision` (share of the mask's mass on object pixels) and `mask_iou`
(mask > 0.5 against the object pixels). Options: comet_images (2000), comet_epochs (3), comet_completeness (1.0),
comet_area (0.5).
"""

from __future__ import annotations

import copy
import time

import numpy as np
import torch

from pretrainlab.data.subsets import subset_indices
from pretrainlab.eval.protocols.multilabel import mean_average_precision
from pretrainlab.explain.comet import COMET, COMETSettings, train_comet
from pretrainlab.explain.context import ExplainContext, resize_masks
from pretrainlab.explain.figures import image_grid
from pretrainlab.explain.registry import AnalysisOutput, register_analysis


def split_tensors(context: ExplainContext, split: str, limit: int) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """(normalised inputs (M, C, S, S), targets (M,) or (M, K), chosen indices) of a class-balanced subset."""
    images = getattr(context.source, split)
    chosen = subset_indices(images, limit, context.settings.seed) if limit < len(images) else np.arange(len(images))
    x = torch.cat(list(context.batches(np.ascontiguousarray(images.images[chosen]))))
    labels = images.labels if images.labels is not None else images.multilabels
    return x, torch.from_numpy(np.asarray(labels[chosen])).to(context.device), chosen


@torch.no_grad()
def score(logits: torch.Tensor, targets: torch.Tensor, multilabel: bool) -> float:
    if multilabel:
        return mean_average_precision(logits.cpu(), targets.cpu())
    return float((logits.argmax(dim=1) == targets).double().mean() * 100)


@register_analysis("comet", options=("comet_images", "comet_epochs", "comet_completeness", "comet_area"))
def comet(context: ExplainContext) -> AnalysisOutput:
    started = time.perf_counter()
    context.require_classes("comet")
    classifier = context.classifier
    settings = COMETSettings(completeness=float(context.option("comet_completeness", 1.0)),
                             area=float(context.option("comet_area", 0.5)),
                             epochs=int(context.option("comet_epochs", 3)), batch_size=context.settings.batch_size)
    limit = int(context.option("comet_images", 2000))
    train_x, train_y, _ = split_tensors(context, "train", limit)
    test_name = "test" if context.source.test is not None else "train"
    test_x, test_y, test_index = split_tensors(context, test_name, max(4, limit // 4))
    detector = copy.deepcopy(classifier.model)  # frozen copy: the shared backbone keeps its gradients
    model = COMET(copy.deepcopy(context.backbone), detector, classifier.num_classes, classifier.multilabel, settings,
                  train_x).to(context.device)
    history = train_comet(model, train_x, train_y, context.settings.seed)
    with torch.no_grad():
        outputs = [model(chunk) for chunk in test_x.split(context.settings.batch_size)]
        logits = torch.cat([o[0] for o in outputs])
        masks = torch.cat([o[1] for o in outputs])[:, 0]  # (M, S, S)
        detector_logits = torch.cat([detector(chunk) for chunk in test_x.split(context.settings.batch_size)])
    metric = "mAP" if classifier.multilabel else "accuracy"
    common = {"comet_images": len(train_x), "test_images": len(test_x), "epochs": settings.epochs,
              "completeness": settings.completeness, "area": settings.area}
    output = AnalysisOutput()
    output.results += [
        context.result("comet", metric, score(logits, test_y, classifier.multilabel), started, **common),
        context.result("comet", f"detector_{metric}", score(detector_logits, test_y, classifier.multilabel), started,
                       **common),
        context.result("comet", "mask_area", float(masks.mean()), started, False, **common),
    ]
    arrays = {"masks": masks.cpu().numpy(), "test_index": test_index, "loss_per_epoch": np.array(history)}
    split = getattr(context.source, test_name)
    if split.masks is not None:
        objects = torch.from_numpy(resize_masks(split.masks[test_index], context.size) > 0).to(masks.device)
        precision = float((masks * objects).sum() / masks.sum().clamp(min=1e-9))
        kept = masks > 0.5
        iou = float((kept & objects).sum() / (kept | objects).sum().clamp(min=1))
        output.results += [context.result("comet", "mask_precision", precision, started, **common),
                           context.result("comet", "mask_iou", iou, started, **common)]
    output.files.append(context.save_arrays("comet", **arrays))
    output.files.append(comet_figure(context, test_x, masks, settings))
    return output


def comet_figure(context: ExplainContext, x: torch.Tensor, masks: torch.Tensor, settings: COMETSettings):  # noqa: ANN201
    shown = min(6, len(x))
    mean, std = context.mean.to(x.device).view(-1, 1, 1), context.std.to(x.device).view(-1, 1, 1)
    pixels = [(x[i] * std + mean).clamp(0, 1).permute(1, 2, 0).cpu().numpy() for i in range(shown)]
    kept = [(x[i] * masks[i] * std + mean).clamp(0, 1).permute(1, 2, 0).cpu().numpy() for i in range(shown)]
    pictures = pixels + [masks[i].cpu().numpy()[..., None] for i in range(shown)] + kept
    titles = ["input"] * shown + ["selector mask"] * shown + ["what the predictor sees"] * shown
    caption = (f"COMET (2407.19308) on {context.target.label}, {context.source.spec}: completeness "
               f"{settings.completeness}, area {settings.area}, {settings.epochs} epochs, seed {context.settings.seed}")
    return image_grid(context.path("comet.png"), pictures, titles, caption, columns=shown)
