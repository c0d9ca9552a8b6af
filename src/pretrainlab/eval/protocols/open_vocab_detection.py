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
image after scoring every class, default 50), templates, vlm_weight_seen, vlm_weight_unseen; detect_epochs,
detect_lr, detect_batch_size, detect_weight_decay, detect_min_steps (the head's AdamW training); seed.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from pretrainlab.backbones.text import create_text_encoder
from pretrainlab.data.boxes import check_boxes, has_boxes
from pretrainlab.data.source import ImageSource
from pretrainlab.data.synthetic_captions import with_article
from pretrainlab.errors import PretrainlabError
from pretrainlab.eval.centernet import CenterNetHead, Targets, build_targets, decode_peaks, detection_loss
from pretrainlab.eval.classifier_training import FeatureInputs, TrainingSettings, fit, seeded
from pretrainlab.eval.detection_ap import Boxes, average_precisions
from pretrainlab.eval.features import normalisation
from pretrainlab.eval.image_text import ImageTextModel, load_image_text_model, text_tower_missing
from pretrainlab.eval.protocols import PROTOCOLS, EvalContext, applies_when, takes_options
from pretrainlab.eval.protocols.dense import extract_feature_maps, input_size
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
    lookup = np.full(boxes[..., 0].max() + 1, -1)
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


def train_detector(maps: torch.Tensor, boxes: np.ndarray, seen: list[int], texts: torch.Tensor,
                   stride: tuple[float, float], settings: TrainingSettings, device: torch.device,
                   seed: int) -> tuple[CenterNetHead, float]:
    """A head trained on standardised maps (N, C, h, w) with the seen classes' boxes of `boxes` (N, M, 5), pixels;
    the other classes' objects are not annotated (background). texts: (K, E) of all classes. Returns the head
    and its last epoch's mean loss."""
    pixels, labels = split_boxes(boxes, seen)
    targets = build_targets(pixels, labels, tuple(maps.shape[2:]), stride).to(device)
    seen_texts = texts[seen].to(device)  # (K_seen, E)
    with seeded(seed, device):
        head = CenterNetHead(maps.shape[1], texts.shape[1])

    def loss(model: CenterNetHead, batch: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        chosen = Targets(*(getattr(targets, name)[indices] for name in Targets.__dataclass_fields__))
        return detection_loss(model(batch), chosen, seen_texts, model.logit_scale)

    losses = fit(head, FeatureInputs(maps, device), loss, settings, device, seed)
    return head, losses[-1]


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


def mean_ap(values: np.ndarray, classes: list[int]) -> float:
    chosen = values[classes]
    return float(np.nanmean(chosen)) * 100 if np.isfinite(chosen).any() else float("nan")


@PROTOCOLS.register("open_vocab_detection")
@takes_options("unseen", "seen", "layer", "img_size", "peaks", "max_detections", "templates", "vlm_weight_seen",
               "vlm_weight_unseen", *TrainingSettings.option_names("detect_"))
@applies_when(needs_boxes)
def open_vocab_detection_protocol(context: EvalContext) -> list[EvalResult]:
    started = time.perf_counter()
    source, options = context.source, context.options
    classes = list(source.classes)
    seen, unseen = class_split(classes, options)
    train_boxes = check_boxes(source.train, len(classes), f"dataset '{source.spec}' (train)")
    test_boxes = check_boxes(source.test, len(classes), f"dataset '{source.spec}' (test)")
    seed, size, layer = int(options.get("seed", 0)), input_size(context), int(options.get("layer", -1))
    settings = TrainingSettings.from_options(options, prefix="detect_", **HEAD_DEFAULTS)
    templates = check_templates(options.get("templates", DEFAULT_TEMPLATES))
    texts, model, text_source = text_space(context, classes, templates)
    mean, std = normalisation(context.target, source.train.images)
    raw_train, raw_test = (extract_feature_maps(context.target, split.images, mean, std, context.device, layer, size)
                           for split in (source.train, source.test))
    channel_mean = raw_train.mean(dim=(0, 2, 3), keepdim=True)  # (1, C, 1, 1): standardised as the dense probe
    channel_std = raw_train.std(dim=(0, 2, 3), keepdim=True).clamp(min=1e-6)
    train_maps, test_maps = (raw_train - channel_mean) / channel_std, (raw_test - channel_mean) / channel_std
    height, width = source.image_size
    stride = (width / train_maps.shape[3], height / train_maps.shape[2])
    head, final_loss = train_detector(train_maps, train_boxes, seen, texts, stride, settings, context.device, seed)
    last_test = raw_test if layer == -1 or model is None else extract_feature_maps(
        context.target, source.test.images, mean, std, context.device, -1, size)
    joint, ensemble = region_ensemble(model, last_test, unseen, len(classes), options)
    decode = {"stride": stride, "image_size": (height, width), "peaks": int(options.get("peaks", 10)),
              "max_detections": int(options.get("max_detections", 50))}
    detections, agnostic = detect(head, test_maps, texts, decode, joint)
    truth = ground_truth(test_boxes)
    per_class = average_precisions(detections, truth, len(classes))
    agnostic_truth = Boxes(truth.image, np.zeros_like(truth.label), truth.boxes)
    details = {**context.base_settings(), "seed": seed, "input_size": size, "layer": layer,
               "feature_map": list(train_maps.shape[1:]), "seen": [classes[k] for k in seen],
               "unseen": [classes[k] for k in unseen], "text_embeddings": text_source, "templates": templates,
               "ensemble": ensemble, **{k: v for k, v in decode.items() if k != "image_size"},
               "head": "CenterNet (class-agnostic heatmap, size, offset, text-scored embedding)", "lr": settings.lr,
               "unseen_in_training": "background (not annotated)", "iou_threshold": 0.5,
               "ap": "all-point interpolated", "final_train_loss": round(final_loss, 5),
               "per_class_ap50": [None if v != v else round(v * 100, 3) for v in per_class.tolist()]}
    values = [("AP50_seen", mean_ap(per_class, seen)), ("AP50_unseen", mean_ap(per_class, unseen)),
              ("AP50", mean_ap(per_class, seen + unseen)),
              ("agnostic_AP50", float(average_precisions(agnostic, agnostic_truth, 1)[0]) * 100)]
    seconds = time.perf_counter() - started
    return [EvalResult("open_vocab_detection", source.spec, metric, value, seconds, settings=details,
                       backbone=context.target.label) for metric, value in values]
