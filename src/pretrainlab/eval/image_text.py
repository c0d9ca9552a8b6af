"""The joint image-text space of an image-text run, for zero-shot classification and image-text retrieval.

A run trained by an image-text method (CLIP) holds `backbone.safetensors` and `text_tower.safetensors`
(backbones/text/tower.py); together they map images and texts into one space where cosine similarity
says how well a text describes an image. Image features come from the ordinary frozen feature
extraction (eval/features.py), so protocols share them with every other protocol of an evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from pretrainlab.backbones.text.tower import TOWER_FILE, TextTower, load_text_tower
from pretrainlab.data.captions import has_captions
from pretrainlab.data.source import ImageSource
from pretrainlab.eval.features import extract_features, normalisation
from pretrainlab.eval.representation import split_spec
from pretrainlab.eval.target import EvalTarget


@dataclass
class ImageTextModel:
    """Args:
        tower: texts -> joint-space embeddings.
        image_projection: (E, D) from pooled backbone features into the joint space.
        logit_scale: exp(t), the learned inverse temperature.
    """

    tower: TextTower
    image_projection: torch.Tensor
    logit_scale: float

    def image_embeddings(self, features: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features (N, D) -> L2-normalised joint embeddings (N, E)."""
        return F.normalize(features.float() @ self.image_projection.T.float(), dim=1)

    @torch.no_grad()
    def text_embeddings(self, texts: list[str], batch_size: int = 512) -> torch.Tensor:
        """texts -> L2-normalised joint embeddings (T, E) on the CPU."""
        parts = [self.tower(texts[start : start + batch_size]).float().cpu()
                 for start in range(0, len(texts), batch_size)]
        return F.normalize(torch.cat(parts), dim=1) if parts else torch.zeros(0, self.tower.embed_dim)


def text_tower_missing(target: EvalTarget) -> str | None:
    """Why `target` has no joint image-text space (None: it has one)."""
    if target.run_dir is None or not (target.run_dir / TOWER_FILE).is_file():
        return (f"needs an image-text run with a text tower ({TOWER_FILE}, e.g. pretrainlab pretrain --method clip), "
                f"but '{target.label}' has none")
    if split_spec(target.label)[1] is not None:
        return f"measures the run's own backbone features; drop the selector from '{target.label}'"
    return None


def load_image_text_model(target: EvalTarget) -> ImageTextModel:
    """The text tower and image projection of the run behind `target` (check `text_tower_missing` first)."""
    tower, extra, _ = load_text_tower(target.run_dir / TOWER_FILE)
    return ImageTextModel(tower, extra["image_projection.weight"], float(extra["logit_scale"].exp().clamp(max=100)))


def needs_captions(source: ImageSource) -> str | None:
    """Applicability of the caption protocols: captions on both splits."""
    if has_captions(source) and source.test is not None:
        return None
    return f"needs captions, but dataset '{source.spec}' has none (use captions:PATH or captions:SPEC)"


def features_at_size(target: EvalTarget, source: ImageSource, split: str, img_size: int,
                     device: torch.device) -> torch.Tensor:
    """Pooled features (N, D) of a split at `img_size` instead of the target's own size.

    A fully convolutional backbone trained on single 28 px digits sees digits of its training scale on
    56 px canvases only at 56 px; the size used is always reported with the result."""
    mean, std = normalisation(target, source.train.images)
    return extract_features(replace(target, img_size=img_size), getattr(source, split).images, mean, std, device)
