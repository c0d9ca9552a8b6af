"""DenseCLIP probe: pixel-text score maps of a language-aligned backbone guide the dense (segmentation) probe.

Rao et al., "DenseCLIP: Language-Guided Dense Prediction with Context-Aware Prompting", arXiv 2112.01518.
CLIP's image embedding is a projection of pooled features; applied to every position of the last feature
map instead, the same projection gives pixel embeddings in the joint space, and their cosine similarity
with each class's text embedding gives a score map per class (the paper's pixel-text score maps). As the
paper does, the score maps are (a) a segmentation of their own (zero-shot) and (b) an extra input beside the feature
map of the dense head; here the probe's 1x1 head is also initialised as that text classifier.

For a CNN whose pooled features are the mean of its last map (every timm CNN here, `tinycnn` included),
the pixel embeddings average to the (unnormalised) image embedding the run was trained on, so no new
weights are involved. Class names are the source's mask classes after "background" (composed canvases:
"0".."9"), put in the zero-shot prompt templates (eval/protocols/zero_shot.py). Background has no
name the text tower knows: a pixel is background when no class stands out, its best score exceeding the
mean of its scores by less than a margin, which is a linear rule (background logit = mean score +
margin) and so fits the linear head. The margin is set so the share of background pixels on the
training masks is matched, the only thing the zero-shot map takes from the training labels. (Measured
on composed canvases with the study's CLIP run: the plain rule "best score below a threshold" marks the
objects as background, because the dark background's pixels are more similar to every prompt than the
digits' pixels are; mIoU 6.8 %, below the 7.7 % of calling everything background.)

Metrics on the test split, in percent (mIoU over background + classes, as the `dense` protocol):
- `zero_shot_mIoU`: the score maps alone (argmax over classes, background below the margin);
- `mIoU`, `pixel_accuracy`: the DenseCLIP probe: a 1x1 conv on [standardised feature map ; standardised
  score maps], initialised as the score-map classifier, then trained like the dense probe (same settings);
- `plain_mIoU`: the plain dense probe (feature map only, default initialisation) with the same settings and
  seed, so `gain_mIoU` = mIoU - plain_mIoU is measured on the same features, split and training budget.
Needs an image-text run (CLIP) and a source with masks and class names (composed:, seg: with classes).

Options: templates, img_size (the last feature map is always used: the one the run's projection reads),
dense_epochs, dense_lr, dense_batch_size, dense_weight_decay, dense_min_steps; seed.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from pretrainlab.data.segmentation import IGNORE_INDEX
from pretrainlab.data.source import ImageSource
from pretrainlab.errors import PretrainlabError
from pretrainlab.eval.classifier_training import FeatureInputs, TrainingSettings, fit, seeded
from pretrainlab.eval.features import normalisation
from pretrainlab.eval.image_text import ImageTextModel, load_image_text_model, text_tower_missing
from pretrainlab.eval.protocols import PROTOCOLS, EvalContext, NotApplicable, applies_when, takes_options
from pretrainlab.eval.protocols.dense import (
    HEAD_DEFAULTS,
    LinearDenseHead,
    extract_feature_maps,
    input_size,
    needs_masks,
    segmentation_scores,
    test_confusion,
)
from pretrainlab.eval.protocols.zero_shot import DEFAULT_TEMPLATES, check_templates, class_embeddings
from pretrainlab.eval.record import EvalResult

BACKGROUND = "background"


def needs_named_mask_classes(source: ImageSource) -> str | None:
    if (reason := needs_masks(source)) is not None:
        return reason
    classes = source.mask_classes or []
    if len(classes) < 2 or classes[0] != BACKGROUND:
        return (f"needs mask class names with '{BACKGROUND}' first (to prompt the text tower), but dataset "
                f"'{source.spec}' has {classes or 'none'} (use composed:SPEC or a seg: source with class names)")
    return None


def score_maps(model: ImageTextModel, maps: torch.Tensor, texts: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Cosine similarity (N, K, h, w) of every pixel embedding with every class embedding.

    maps: raw last feature maps (N, C, h, w); texts: normalised class embeddings (K, E)."""
    parts = []
    for start in range(0, len(maps), batch_size):
        chunk = maps[start : start + batch_size].float()  # (B, C, h, w)
        pixels = torch.einsum("ec,bchw->behw", model.image_projection.float(), chunk)  # (B, E, h, w)
        parts.append(torch.einsum("behw,ke->bkhw", F.normalize(pixels, dim=1), texts.float()))
    return torch.cat(parts)


def class_margin(scores: torch.Tensor) -> torch.Tensor:
    """How much a pixel's best class stands out: max minus mean over the K classes, (N, K, h, w) -> (N, h, w)."""
    return scores.amax(dim=1) - scores.mean(dim=1)


def background_margin(train_scores: torch.Tensor, masks: np.ndarray) -> float:
    """The class margin below which a pixel is background, so that on the training set the share of
    background pixels matches the masks'. train_scores (N, K, h, w); masks (N, H, W) with 0 = background."""
    upsampled = F.interpolate(train_scores, size=masks.shape[1:], mode="bilinear", align_corners=False)
    known = masks != IGNORE_INDEX
    background_share = float((masks[known] == 0).mean())
    return float(np.quantile(class_margin(upsampled)[torch.from_numpy(known)].numpy(), background_share))


def standardise(train: torch.Tensor, test: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                                   torch.Tensor]:
    """Per-channel standardisation with the training statistics: (train, test, mean (C,), std (C,))."""
    mean = train.mean(dim=(0, 2, 3))
    std = train.std(dim=(0, 2, 3)).clamp(min=1e-6)
    return ((train - mean[:, None, None]) / std[:, None, None], (test - mean[:, None, None]) / std[:, None, None],
            mean, std)


def text_initialised_head(channels: int, score_mean: torch.Tensor, score_std: torch.Tensor, scale: float,
                          margin: float, out_size: tuple[int, int]) -> LinearDenseHead:
    """A 1x1 head on [features (channels) ; standardised scores (K)] whose logits start as the score-map
    classifier: class k+1 = scale * score_k, background = scale * (mean_k score_k + margin), features weighted 0."""
    classes = len(score_mean)
    head = LinearDenseHead(channels + classes, classes + 1, out_size)
    with torch.no_grad():
        head.classify.weight.zero_()
        head.classify.bias.zero_()
        for k in range(classes):  # scale * score_k = scale * (std_k * standardised_k + mean_k)
            head.classify.weight[k + 1, channels + k, 0, 0] = scale * score_std[k]
            head.classify.bias[k + 1] = scale * score_mean[k]
            head.classify.weight[0, channels + k, 0, 0] = scale * score_std[k] / classes
        head.classify.bias[0] = scale * (float(score_mean.mean()) + margin)
    return head


def train_head(head: nn.Module, train: torch.Tensor, masks: torch.Tensor, settings: TrainingSettings,
               device: torch.device, seed: int) -> float:
    def loss(model: nn.Module, maps: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model(maps), masks[indices].long(), ignore_index=IGNORE_INDEX)

    return fit(head, FeatureInputs(train, device), loss, settings, device, seed)[-1]


@PROTOCOLS.register("denseclip")
@takes_options("img_size", "templates", *TrainingSettings.option_names("dense_"))
@applies_when(needs_named_mask_classes)
def denseclip_protocol(context: EvalContext) -> list[EvalResult]:
    started = time.perf_counter()
    if (reason := text_tower_missing(context.target)) is not None:
        raise NotApplicable(f"protocol 'denseclip' {reason}")
    seed, size, source = int(context.options.get("seed", 0)), input_size(context), context.source
    settings = TrainingSettings.from_options(context.options, prefix="dense_", **HEAD_DEFAULTS)
    model = load_image_text_model(context.target)
    templates = check_templates(context.options.get("templates", DEFAULT_TEMPLATES))
    names = list(source.mask_classes[1:])
    texts = class_embeddings(model, names, templates)  # (K, E)
    mean, std = normalisation(context.target, source.train.images)
    raw_train, raw_test = (extract_feature_maps(context.target, split.images, mean, std, context.device, -1, size)
                           for split in (source.train, source.test))
    if raw_train.shape[1] != model.image_projection.shape[1]:
        raise PretrainlabError(f"protocol 'denseclip': the last feature map has {raw_train.shape[1]} channels but "
                               f"the run's image projection reads {model.image_projection.shape[1]}; it needs a "
                               "backbone whose pooled features are the mean of its last map")
    scores_train, scores_test = score_maps(model, raw_train, texts), score_maps(model, raw_test, texts)
    margin = background_margin(scores_train, source.train.masks)
    features_train, features_test, _, _ = standardise(raw_train, raw_test)
    scaled_train, scaled_test, score_mean, score_std = standardise(scores_train, scores_test)
    inputs_train, inputs_test = torch.cat([features_train, scaled_train], 1), torch.cat([features_test, scaled_test], 1)
    classes, channels = len(names) + 1, features_train.shape[1]
    masks = torch.from_numpy(source.train.masks).to(context.device)
    head = text_initialised_head(channels, score_mean, score_std, model.logit_scale, margin, source.image_size)
    zero_shot = test_confusion(head.to(context.device), inputs_test, source.test.masks, classes, context.device)
    final_loss = train_head(head, inputs_train, masks, settings, context.device, seed)
    miou, accuracy = segmentation_scores(test_confusion(head, inputs_test, source.test.masks, classes, context.device))
    with seeded(seed, context.device):
        plain = LinearDenseHead(channels, classes, source.image_size)
    train_head(plain, features_train, masks, settings, context.device, seed)
    plain_miou, _ = segmentation_scores(test_confusion(plain, features_test, source.test.masks, classes,
                                                       context.device))
    details = {**context.base_settings(), "seed": seed, "input_size": size, "templates": templates,
               "feature_map": list(raw_train.shape[1:]), "classes": classes, "background_margin": margin,
               "logit_scale": model.logit_scale, "head": "1x1 conv on [maps ; score maps], text-initialised",
               "lr": settings.lr, "final_train_loss": round(final_loss, 5)}
    values = [("mIoU", miou), ("pixel_accuracy", accuracy), ("zero_shot_mIoU", segmentation_scores(zero_shot)[0]),
              ("plain_mIoU", plain_miou), ("gain_mIoU", miou - plain_miou)]
    seconds = time.perf_counter() - started
    return [EvalResult("denseclip", source.spec, metric, value, seconds, settings=details,
                       backbone=context.target.label) for metric, value in values]
