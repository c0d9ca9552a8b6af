"""Image-text matching: do held-out captions score above swapped ones, and does the pair score retrieve?

UNITER's evaluation (Chen et al., arXiv 1909.11740, sections 4.1 and 4.2): image-text matching and
retrieval by the ITM score of every image-caption pair, run through the cross-modal transformer (a
cross-encoder). Every pair is one forward pass, so retrieval runs on a seeded subset of `images` test
images and all their captions (UNITER ranks Flickr30k's 1k test images the same way). Scorers:
- a UNITER run (`cross_modal.safetensors`): the ITM head's log-odds that the caption describes the image;
- a CLIP run (`text_tower.safetensors`): cosine similarity in the joint space (a dual encoder), so both
  kinds of run are measured on the same pairs and the same subset.
Metrics (percent):
- `itm_accuracy` (UNITER only: CLIP has no match threshold): correct match / no-match decisions
  (log-odds > 0) over every test caption with its own image and with another image (one negative per
  positive: the caption of the same slot of a seeded partner image; pairs whose texts are identical are
  left out, as neither answer is wrong);
- `itm_pairwise_accuracy`: share of those positives scored above their negative (any scorer, no threshold);
- `i2t_recall@K`, `t2i_recall@K` (K = 1, 5, 10) and `rsum` on the subset, as image_text_retrieval.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from pretrainlab.backbones.text.cross_modal import CROSS_MODAL_FILE, CrossModalModel, load_cross_modal
from pretrainlab.data.captions import image_captions
from pretrainlab.errors import PretrainlabError
from pretrainlab.eval.features import evaluating, input_batches, normalisation
from pretrainlab.eval.image_text import load_image_text_model, needs_captions, text_tower_missing
from pretrainlab.eval.protocols import PROTOCOLS, EvalContext, NotApplicable, applies_when, takes_options
from pretrainlab.eval.protocols.image_text_retrieval import recalls_from_scores
from pretrainlab.eval.record import EvalResult

DEFAULT_IMAGES = 100
PAIR_BATCH = 512


class CrossEncoderScorer:
    """ITM log-odds of (test image, text) pairs from a UNITER run's cross-modal model."""

    kind = "ITM log-odds of the cross-modal transformer (cross-encoder)"

    def __init__(self, model: CrossModalModel, maps: torch.Tensor) -> None:
        self.model, self.maps = model, maps  # maps (N, C, h, w) of the test split

    def __call__(self, images: torch.Tensor, texts: list[str]) -> torch.Tensor:
        """images (P,) indices into the test split, P texts -> scores (P,)."""
        return torch.cat([self.model.match_scores(self.maps[images[start : start + PAIR_BATCH]],
                                                  texts[start : start + PAIR_BATCH])
                          for start in range(0, len(texts), PAIR_BATCH)])


class DualEncoderScorer:
    """Cosine similarity of (test image, text) pairs in a CLIP run's joint space."""

    kind = "cosine in the joint space (dual encoder)"

    def __init__(self, context: EvalContext) -> None:
        self.model = load_image_text_model(context.target)
        self.images = self.model.image_embeddings(context.features("test"))  # (N, E)
        self.cache: dict[str, torch.Tensor] = {}

    def __call__(self, images: torch.Tensor, texts: list[str]) -> torch.Tensor:
        missing = sorted(set(texts) - self.cache.keys())
        if missing:
            self.cache.update(zip(missing, self.model.text_embeddings(missing), strict=True))
        return (self.images[images] * torch.stack([self.cache[t] for t in texts])).sum(dim=1)


@torch.no_grad()
def test_feature_maps(context: EvalContext) -> torch.Tensor:
    """The last feature map (N, C, h, w) of every test image at the target's size, on the CPU."""
    mean, std = normalisation(context.target, context.source.train.images)
    with evaluating(context.target.backbone.to(context.device)) as backbone:
        return torch.cat([backbone.feature_maps(x)[-1].float().cpu() for x in
                          input_batches(context.target, context.source.test.images, mean, std, context.device,
                                        context.target.img_size, 128)])


def scorer_for(context: EvalContext) -> CrossEncoderScorer | DualEncoderScorer:
    run_dir = context.target.run_dir
    if run_dir is not None and (run_dir / CROSS_MODAL_FILE).is_file():
        return CrossEncoderScorer(load_cross_modal(run_dir / CROSS_MODAL_FILE), test_feature_maps(context))
    if text_tower_missing(context.target) is not None:
        raise NotApplicable(f"protocol 'image_text_matching' needs an image-text run, a UNITER run ({CROSS_MODAL_FILE}"
                            f", --method uniter) or a CLIP run (text_tower.safetensors, --method clip), but "
                            f"'{context.target.label}' is neither")
    return DualEncoderScorer(context)


def swapped_pairs(per_image: list[list[str]], rng: np.random.Generator) -> tuple[torch.Tensor, list[str], list[str]]:
    """(image indices (P,), their own captions, swapped captions): every caption of every image, and the
    caption of the same slot of a seeded partner image, shown with the same image as its negative."""
    count = len(per_image)
    partners = (np.arange(count) + rng.integers(1, count, size=count)) % count  # never the image itself
    images, positives, negatives = [], [], []
    for index, captions in enumerate(per_image):
        others = per_image[partners[index]]
        for slot, text in enumerate(captions):
            swapped = others[slot % len(others)]
            if swapped != text:  # an identical text describes both images: no wrong answer to score
                images.append(index)
                positives.append(text)
                negatives.append(swapped)
    return torch.tensor(images, dtype=torch.int64), positives, negatives


def matching_scores(scorer: CrossEncoderScorer | DualEncoderScorer, per_image: list[list[str]],
                    rng: np.random.Generator) -> dict[str, float]:
    images, positives, negatives = swapped_pairs(per_image, rng)
    if not positives:
        raise PretrainlabError("image_text_matching found no pair of test images with different captions")
    positive, negative = scorer(images, positives), scorer(images, negatives)  # (P,) each
    scores = {"itm_pairwise_accuracy": float((positive > negative).float().mean()) * 100}
    if isinstance(scorer, CrossEncoderScorer):
        correct = torch.cat([positive > 0, negative <= 0]).float()
        scores["itm_accuracy"] = float(correct.mean()) * 100
    return scores


def retrieval_scores(scorer: CrossEncoderScorer | DualEncoderScorer, per_image: list[list[str]],
                     chosen: np.ndarray) -> dict[str, float]:
    """Recalls on the images `chosen` (M,) and all their captions (T), every one of the M x T pairs scored."""
    texts = [text for index in chosen for text in per_image[index]]
    owners = torch.tensor([row for row, index in enumerate(chosen) for _ in per_image[index]])  # (T,)
    images = torch.from_numpy(np.repeat(chosen, len(texts)))  # (M * T,) image-major
    scores = scorer(images, texts * len(chosen)).reshape(len(chosen), len(texts))  # (M, T)
    return recalls_from_scores(scores, owners)


@PROTOCOLS.register("image_text_matching")
@applies_when(needs_captions)
@takes_options("images")
def image_text_matching_protocol(context: EvalContext) -> list[EvalResult]:
    started = time.perf_counter()
    seed, subset = int(context.options.get("seed", 0)), int(context.options.get("images", DEFAULT_IMAGES))
    per_image = image_captions(context.source.test)
    if subset < 2:
        raise PretrainlabError(f"option images={subset}: retrieval needs at least 2 test images")
    if len(per_image) < 2:
        raise NotApplicable("protocol 'image_text_matching' needs at least 2 test images")
    scorer = scorer_for(context)
    rng = np.random.default_rng(seed)
    scores = matching_scores(scorer, per_image, rng)
    chosen = np.sort(rng.choice(len(per_image), min(subset, len(per_image)), replace=False))
    scores.update(retrieval_scores(scorer, per_image, chosen))
    settings = {**context.base_settings(), "seed": seed, "score": scorer.kind, "retrieval_images": len(chosen),
                "retrieval_captions": sum(len(per_image[i]) for i in chosen),
                "negatives": "one per test caption: the same caption slot of a seeded partner image"}
    seconds = time.perf_counter() - started
    return [EvalResult("image_text_matching", context.source.spec, metric, value, seconds, settings=settings,
                       backbone=context.target.label) for metric, value in scores.items()]
