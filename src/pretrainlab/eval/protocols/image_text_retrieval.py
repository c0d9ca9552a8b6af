"""Image-text retrieval: test images find their own captions, and captions their own images.

The bidirectional recall@K protocol of image-text matching (Flickr30k / MS-COCO 5k test), as surveyed
in "Deep Learning Applied to Image and Text Matching" (Peng and Ge, arXiv 2010.03018) and used by CLIP
(arXiv 2103.00020, table 13). On the test split, every image and every caption (all of each image's
captions) go into the joint space of an image-text run:
- image -> text `i2t_recall@K`: share of images with at least one of their own captions among the K
  captions most similar to them;
- text -> image `t2i_recall@K`: share of captions whose image is among the K images most similar to them.
K = 1, 5, 10; values in percent; `rsum` is the sum of the six (the field's usual summary). Nothing is
trained or random. Needs an image-text run (CLIP) and a source with captions (captions:PATH or :SPEC).
"""

from __future__ import annotations

import time

import torch

from pretrainlab.data.captions import image_captions
from pretrainlab.eval.image_text import load_image_text_model, needs_captions, text_tower_missing
from pretrainlab.eval.protocols import PROTOCOLS, EvalContext, NotApplicable, applies_when, takes_options
from pretrainlab.eval.record import EvalResult

RECALL_AT = (1, 5, 10)


def image_text_recalls(images: torch.Tensor, texts: torch.Tensor, owners: torch.Tensor,
                       recall_at: tuple[int, ...] = RECALL_AT) -> dict[str, float]:
    """images (M, E), texts (T, E) normalised; owners (T,) the image index of each caption -> recalls in %."""
    return recalls_from_scores(images @ texts.T, owners, recall_at)


def recalls_from_scores(similarity: torch.Tensor, owners: torch.Tensor,
                        recall_at: tuple[int, ...] = RECALL_AT) -> dict[str, float]:
    """similarity (M, T) of every image with every caption (any score, higher = better match); owners (T,)
    the image index of each caption -> recalls in % both ways and their sum `rsum`."""
    images = similarity.shape[0]
    scores = {}
    for k in recall_at:
        top_texts = similarity.topk(min(k, similarity.shape[1]), dim=1).indices  # (M, k)
        own = owners[top_texts] == torch.arange(images)[:, None]
        scores[f"i2t_recall@{k}"] = float(own.any(dim=1).float().mean()) * 100
    for k in recall_at:
        top_images = similarity.T.topk(min(k, similarity.shape[0]), dim=1).indices  # (T, k)
        scores[f"t2i_recall@{k}"] = float((top_images == owners[:, None]).any(dim=1).float().mean()) * 100
    scores["rsum"] = sum(scores.values())
    return scores


@PROTOCOLS.register("image_text_retrieval")
@applies_when(needs_captions)
@takes_options()
def image_text_retrieval_protocol(context: EvalContext) -> list[EvalResult]:
    started = time.perf_counter()
    if (reason := text_tower_missing(context.target)) is not None:
        raise NotApplicable(f"protocol 'image_text_retrieval' {reason}")
    model = load_image_text_model(context.target)
    per_image = image_captions(context.source.test)
    texts = [text for captions in per_image for text in captions]
    owners = torch.tensor([index for index, captions in enumerate(per_image) for _ in captions])
    scores = image_text_recalls(model.image_embeddings(context.features("test")), model.text_embeddings(texts), owners)
    settings = {**context.base_settings(), "captions": len(texts), "similarity": "cosine in the joint space",
                "queries": "every test image and every test caption", "deterministic": True}
    seconds = time.perf_counter() - started
    return [EvalResult("image_text_retrieval", context.source.spec, metric, value, seconds, settings=settings,
                       backbone=context.target.label) for metric, value in scores.items()]
