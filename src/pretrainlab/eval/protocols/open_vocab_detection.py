"""Open-vocabulary detection probe: a CenterNet head on frozen feature maps, trained on seen classes and tested
on held-out (unseen) classes through the text embeddings of their names.

The setting of "Detection-Oriented Image-Text Pretraining for Open-Vocabulary Detection" (DITO, Kim et al.,
arXiv 2310.00161) and of the open-vocabulary benchmarks it reports on (OV-COCO: novel classes' boxes are
removed from the training annotations, so unseen objects in training images count as background). The head
(eval/centernet.py) learns class-agnostic centres, box sizes and an embedding per location whose cosine
with the class names' text embeddings classifies; at test time the vocabulary is every class, seen and unseen.

Text embeddings: from the run's own text tower when the target is an image-text run (CLIP, DITO: prompts of
eval/protocols/zero_shot.py in its joint space); otherwise from the frozen all-MiniLM-L6-v2 sentence
encoder, so any backbone gets a fixed language space to map onto. For a run with a joint space the
detector's class scores are also ensembled with its open-vocabulary region scores, as DITO does (after
F-VLM, arXiv 2209.15639): the box is pooled from the raw last feature map (RoI-Align), projected by the
run's image projection, and scored against the texts (softmax at the run's temperature); the final score of
class k is objectness * p_k^(1 - w) * v_k^w with w = 0.35 for seen and 0.65 for unseen classes (the papers'
alpha and beta), p the head's softmax over all classes and v the region's.

Metrics on the test split, in percent (eval/detection_ap.py: IoU >= 0.5, all-point interpolated AP):
`AP50_seen` and `AP50_unseen` (mean per-class AP over each group), `AP50` (all classes) and
`agnostic_AP50` (class-agnostic boxes ranked by objectness: localisation alone).

Options: unseen (class names, comma-separated; default: the last 30 % of the classes), seen (default: the
rest), layer (feature map index, default -1), img_size, peaks (per image, default 10), max_detections (per
image after scoring every class, default 50), templates, vlm_weight_seen, vlm_weight_unseen; finetune (true:
train a copy of the backbone with the head, eval/open_vocab_detector.py; default false, frozen maps),
backbone_lr_scale (its learning rate relative to the head's, default 0.1); detect_epochs, detect_lr,
detect_batch_size, detect_weight_decay, detect_min_steps (AdamW, cosine decay); seed.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pretrainlab.backbones.text import create_text_encoder
from pretrainlab.data.boxes import check_boxes, has_boxes
from pretrainlab.data.source import ImageSource
from pretrainlab.data.synthetic_captions import with_article
from pretrainlab.errors import PretrainlabError
from pretrainlab.eval.centernet import CenterNetHead, build_targets
from pretrainlab.eval.classifier_training import FeatureInputs, TrainingSettings, seeded
from pretrainlab.eval.detection_ap import Boxes, average_precisions
from pretrainlab.eval.features import normalisation
from pretrainlab.eval.image_text import ImageTextModel, load_image_text_model, text_tower_missing
from pretrainlab.eval.open_vocab_detector import (
    detect,
    finetune_detector,
    finetuned_maps,
    fit_detector,
    ground_truth,
    split_boxes,
)
from pretrainlab.eval.protocols import PROTOCOLS, EvalContext, applies_when, takes_options
from pretrainlab.eval.protocols.dense import extract_feature_maps, input_size, option_flag
from pretrainlab.eval.protocols.zero_shot import DEFAULT_TEMPLATES, check_templates, class_embeddings
from pretrainlab.eval.record import EvalResult

HEAD_DEFAULTS = {"epochs": 10, "lr": 2e-3, "batch_size": 32, "weight_decay": 1e-4, "min_steps": 400,
                 "warmup_fraction": 0.05}
UNSEEN_SHARE = 0.3
VLM_WEIGHTS = {"seen": 0.35, "unseen": 0.65}  # F-VLM / DITO's alpha and beta


def needs_boxes(source: ImageSource) -> str | None:
    if not has_boxes(source) or not source.classes:
        return (f"needs object boxes with class names on both splits, but dataset '{source.spec}' has none "
                "(use composed:SPEC, whose canvases record every object's box)")
    return None


def names_option(value: Any) -> list[str]:
    items = value if isinstance(value, list | tuple) else str(value).split(",")
    return [str(item).strip() for item in items if str(item).strip()]


def class_split(classes: list[str], options: dict[str, Any]) -> tuple[list[int], list[int]]:
    """(seen, unseen) class ids from the options' names; unknown, repeated or overlapping names are errors."""
    default_unseen = classes[len(classes) - max(1, round(UNSEEN_SHARE * len(classes))):]
    unseen = names_option(options["unseen"]) if options.get("unseen") is not None else default_unseen
    seen = (names_option(options["seen"]) if options.get("seen") is not None
            else [name for name in classes if name not in unseen])
    for group, names in (("unseen", unseen), ("seen", seen)):
        unknown = [name for name in names if name not in classes]
        if unknown:
            raise PretrainlabError(f"option {group}: unknown class name(s) {', '.join(unknown)}; valid: "
                                   f"{', '.join(classes)}")
        if not names or len(set(names)) != len(names):
            raise PretrainlabError(f"option {group} must name at least one class, each once; got {names}")
    if set(seen) & set(unseen):
        raise PretrainlabError(f"classes {sorted(set(seen) & set(unseen))} are both seen and unseen")
    return [classes.index(name) for name in seen], [classes.index(name) for name in unseen]


def text_space(context: EvalContext, classes: list[str],
               templates: list[str]) -> tuple[torch.Tensor, ImageTextModel | None, str]:
    """Normalised class embeddings (K, E), the run's joint space (None without one), and where they came from."""
    if text_tower_missing(context.target) is None:
        model = load_image_text_model(context.target)
        return class_embeddings(model, classes, templates), model, "the run's text tower"
    encoder = create_text_encoder("minilm", ())
    prompts = [template.format(with_article(name)) for name in classes for template in templates]
    per_prompt = F.normalize(encoder.encode(prompts).float().cpu(), dim=1).reshape(len(classes), len(templates), -1)
    return F.normalize(per_prompt.mean(dim=1), dim=1), None, "frozen all-MiniLM-L6-v2"


def region_ensemble(model: ImageTextModel | None, last_test: torch.Tensor, unseen: list[int], num_classes: int,
                    options: dict[str, Any]) -> tuple[tuple[ImageTextModel, torch.Tensor, torch.Tensor] | None, str]:
    """The joint space's region scores for `detect` (None where there are none) and how they are combined."""
    if model is None:
        return None, "none (no joint image-text space)"
    if last_test.shape[1] != model.image_projection.shape[1]:
        return None, (f"none: the last map has {last_test.shape[1]} channels, the image projection reads "
                      f"{model.image_projection.shape[1]}")
    weights = torch.full((num_classes,), float(options.get("vlm_weight_seen", VLM_WEIGHTS["seen"])))
    weights[unseen] = float(options.get("vlm_weight_unseen", VLM_WEIGHTS["unseen"]))
    return (model, last_test, weights), "objectness * p^(1-w) * v^w, v from RoI-Align on the last map"


def backbone_lr_scale(options: dict) -> float:
    """The fine-tuned backbone's learning rate as a share of the head's: a number >= 0 (0: the frozen probe)."""
    value = options.get("backbone_lr_scale", 0.1)
    try:
        scale = float(value)
    except (TypeError, ValueError):
        scale = float("nan")
    if not scale >= 0:  # also refuses nan
        raise PretrainlabError(f"option backbone_lr_scale={value} is not valid: give a number >= 0 (the backbone's "
                               "learning rate as a share of the head's; 0 keeps it frozen, default 0.1)")
    return scale


def train_and_map(context: EvalContext, raw: tuple[torch.Tensor, torch.Tensor], boxes: np.ndarray, seen: list[int],
                  texts: torch.Tensor, layer: int, size: int, normalise: tuple[torch.Tensor, torch.Tensor]
                  ) -> tuple[CenterNetHead, torch.Tensor, float, tuple[float, float]]:
    """Trains the head (and, with option finetune, a copy of the backbone) on the seen classes' boxes.
    raw: the frozen (train, test) maps. Returns the head, the standardised test maps it reads, its final loss and
    the stride (x, y) in pixels per map cell."""
    options, source, device = context.options, context.source, context.device
    seed = int(options.get("seed", 0))
    settings = TrainingSettings.from_options(options, prefix="detect_", **HEAD_DEFAULTS)
    raw_train, raw_test = raw
    channel_mean = raw_train.mean(dim=(0, 2, 3), keepdim=True)  # (1, C, 1, 1): standardised as the dense probe
    channel_std = raw_train.std(dim=(0, 2, 3), keepdim=True).clamp(min=1e-6)
    height, width = source.image_size
    stride = (width / raw_train.shape[3], height / raw_train.shape[2])
    targets = build_targets(*split_boxes(boxes, seen), tuple(raw_train.shape[2:]), stride)
    with seeded(seed, device):
        head = CenterNetHead(raw_train.shape[1], texts.shape[1])
    if not option_flag(options, "finetune"):
        train_maps = (raw_train - channel_mean) / channel_std
        loss = fit_detector(head, FeatureInputs(train_maps, device), targets, texts[seen], settings, device, seed)
        return head, (raw_test - channel_mean) / channel_std, loss, stride
    scale = backbone_lr_scale(options)
    detector, inputs, groups = finetune_detector(context.target, head, source.train.images, layer,
                                                 (channel_mean, channel_std), normalise, size, settings, scale, device)
    loss = fit_detector(detector, inputs, targets, texts[seen], settings, device, seed, groups)
    return head, finetuned_maps(context.target, detector, source.test.images, normalise, size, device), loss, stride


def mean_ap(values: np.ndarray, classes: list[int]) -> float:
    chosen = values[classes]
    return float(np.nanmean(chosen)) * 100 if np.isfinite(chosen).any() else float("nan")


@PROTOCOLS.register("open_vocab_detection")
@takes_options("unseen", "seen", "layer", "img_size", "peaks", "max_detections", "templates", "vlm_weight_seen",
               "vlm_weight_unseen", "finetune", "backbone_lr_scale", *TrainingSettings.option_names("detect_"))
@applies_when(needs_boxes)
def open_vocab_detection_protocol(context: EvalContext) -> list[EvalResult]:
    started = time.perf_counter()
    source, options = context.source, context.options
    classes = list(source.classes)
    seen, unseen = class_split(classes, options)
    backbone_lr_scale(options)  # refused before any feature is extracted
    train_boxes = check_boxes(source.train, len(classes), f"dataset '{source.spec}' (train)")
    test_boxes = check_boxes(source.test, len(classes), f"dataset '{source.spec}' (test)")
    size, layer = input_size(context), int(options.get("layer", -1))
    templates = check_templates(options.get("templates", DEFAULT_TEMPLATES))
    texts, model, text_source = text_space(context, classes, templates)
    normalise = normalisation(context.target, source.train.images)
    raw = tuple(extract_feature_maps(context.target, split.images, *normalise, context.device, layer, size)
                for split in (source.train, source.test))
    head, test_maps, final_loss, stride = train_and_map(context, raw, train_boxes, seen, texts, layer, size, normalise)
    last_test = raw[1] if layer == -1 or model is None else extract_feature_maps(
        context.target, source.test.images, *normalise, context.device, -1, size)
    joint, ensemble = region_ensemble(model, last_test, unseen, len(classes), options)
    decode = {"stride": stride, "image_size": source.image_size, "peaks": int(options.get("peaks", 10)),
              "max_detections": int(options.get("max_detections", 50))}
    detections, agnostic = detect(head, test_maps, texts, decode, joint)
    truth = ground_truth(test_boxes)
    per_class = average_precisions(detections, truth, len(classes))
    agnostic_ap = average_precisions(agnostic, Boxes(truth.image, np.zeros_like(truth.label), truth.boxes), 1)[0]
    details = {**context.base_settings(), "seed": int(options.get("seed", 0)), "input_size": size, "layer": layer,
               "feature_map": list(test_maps.shape[1:]), "seen": [classes[k] for k in seen],
               "unseen": [classes[k] for k in unseen], "text_embeddings": text_source, "templates": templates,
               "ensemble": ensemble, "backbone": "fine-tuned copy" if option_flag(options, "finetune") else "frozen",
               **{k: v for k, v in decode.items() if k != "image_size"},
               "head": "CenterNet (class-agnostic heatmap, size, offset, text-scored embedding)",
               "unseen_in_training": "background (not annotated)", "iou_threshold": 0.5, "ap": "all-point interpolated",
               "final_train_loss": round(final_loss, 5),
               "per_class_ap50": [None if v != v else round(v * 100, 3) for v in per_class.tolist()]}
    values = [("AP50_seen", mean_ap(per_class, seen)), ("AP50_unseen", mean_ap(per_class, unseen)),
              ("AP50", mean_ap(per_class, seen + unseen)), ("agnostic_AP50", float(agnostic_ap) * 100)]
    seconds = time.perf_counter() - started
    return [EvalResult("open_vocab_detection", source.spec, metric, value, seconds, settings=details,
                       backbone=context.target.label) for metric, value in values]
