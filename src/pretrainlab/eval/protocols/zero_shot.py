"""Zero-shot classification: class names in prompt templates, scored against images in the joint space.

Radford et al., "Learning Transferable Visual Models From Natural Language Supervision", arXiv 2103.00020,
section 3.1.4: every class becomes a set of prompts ("a photo of a {class}."); the prompts' normalised
text embeddings are averaged (prompt ensembling) and normalised again into one class embedding; an image
is scored against every class by cosine similarity. Nothing is trained on the evaluated data.

Metrics on the test split, in percent: single-label sources report `top1` (and `top5` with more than
five classes); multi-label sources (composed canvases) report `mAP`, each class ranking the test images
by the class's zero-shot probability (softmax over the classes at the run's learned temperature). Ranking
by raw cosine instead mixes in each image's overall similarity to all prompts (measured on composed
canvases: a CLIP whose softmax ranking gave 49 % mAP was at chance, 27 %, on raw cosine).
Needs an image-text run (CLIP) and a source with class names.

Options: templates (a list of strings with one "{}", which receives "a/an NAME", e.g. "a photo of {}.").
"""

from __future__ import annotations

import time

import torch

from pretrainlab.data.source import ImageSource
from pretrainlab.data.synthetic_captions import with_article
from pretrainlab.errors import PretrainlabError
from pretrainlab.eval.average_precision import average_precisions
from pretrainlab.eval.image_text import ImageTextModel, load_image_text_model, text_tower_missing
from pretrainlab.eval.protocols import PROTOCOLS, EvalContext, NotApplicable, applies_when, takes_options
from pretrainlab.eval.record import EvalResult

DEFAULT_TEMPLATES = ("{}", "a photo of {}.", "an image of {}.", "a picture showing {}.")


def needs_class_names(source: ImageSource) -> str | None:
    if not source.classes:
        return (f"needs class names to build prompts, but dataset '{source.spec}' has none (use a folder with "
                "one subfolder per class, an npz with 'classes', builtin, torchvision or composed)")
    if not (source.labelled or source.has_multilabels) or source.test is None:
        return f"needs labelled test images, but dataset '{source.spec}' has none"
    return None


def check_templates(templates: list[str] | tuple[str, ...]) -> list[str]:
    templates = [str(t) for t in templates]
    if not templates or any(t.count("{}") != 1 for t in templates):
        raise PretrainlabError(f"zero-shot templates must each hold one '{{}}' (the class), got {templates}")
    return templates


def class_embeddings(model: ImageTextModel, classes: list[str], templates: list[str]) -> torch.Tensor:
    """(K, E): per class, the normalised mean of its prompts' normalised embeddings."""
    prompts = [template.format(with_article(name)) for name in classes for template in templates]
    per_prompt = model.text_embeddings(prompts).reshape(len(classes), len(templates), -1)  # (K, P, E)
    return torch.nn.functional.normalize(per_prompt.mean(dim=1), dim=1)


def zero_shot_scores(model: ImageTextModel, features: torch.Tensor, classes: list[str],
                     templates: list[str]) -> torch.Tensor:
    """Cosine similarity (N, K) of each image (pooled features (N, D)) with each class's prompts."""
    return model.image_embeddings(features) @ class_embeddings(model, classes, templates).T


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    top = scores.topk(min(k, scores.shape[1]), dim=1).indices  # (N, k)
    return float((top == labels[:, None]).any(dim=1).float().mean()) * 100


@PROTOCOLS.register("zero_shot")
@applies_when(needs_class_names)
@takes_options("templates")
def zero_shot_protocol(context: EvalContext) -> list[EvalResult]:
    started = time.perf_counter()
    if (reason := text_tower_missing(context.target)) is not None:
        raise NotApplicable(f"protocol 'zero_shot' {reason}")
    templates = check_templates(context.options.get("templates", DEFAULT_TEMPLATES))
    model = load_image_text_model(context.target)
    classes = list(context.source.classes)
    scores = zero_shot_scores(model, context.features("test"), classes, templates)  # (M, K)
    settings = {**context.base_settings(), "templates": templates, "ensembling": "mean of normalised prompt "
                "embeddings", "classes": len(classes), "similarity": "cosine in the joint space", "deterministic": True}
    if context.source.test.labels is not None:
        labels = context.labels("test")
        values = [("top1", topk_accuracy(scores, labels, 1))]
        if len(classes) > 5:
            values.append(("top5", topk_accuracy(scores, labels, 5)))
    else:
        targets = torch.from_numpy(context.source.test.multilabels).bool()
        probabilities = (scores * model.logit_scale).softmax(dim=1)  # (M, K)
        per_class = average_precisions(probabilities.T.double(), targets.T)  # (K,), NaN: no positive
        settings["ranking"] = "softmax over classes at the learned temperature"
        settings["per_class_ap"] = [None if v != v else round(v * 100, 3) for v in per_class.tolist()]
        values = [("mAP", float(per_class.nanmean()) * 100)]
    seconds = time.perf_counter() - started
    return [EvalResult("zero_shot", context.source.spec, metric, value, seconds, settings=settings,
                       backbone=context.target.label) for metric, value in values]
