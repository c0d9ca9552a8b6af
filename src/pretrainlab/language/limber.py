"""LiMBeR: one linear map from frozen image features into a frozen language model's input embeddings.

Merullo, Castricato, Eickhoff, Pavlick, "Linearly Mapping from Image to Text Space", arXiv 2209.15162.
The image encoder and the LM stay frozen; a single linear layer maps an image's features to `k` soft
prompt vectors in the LM's input space and is trained with the LM's captioning loss (next-token
cross-entropy of the caption after the prompt). How well the LM can then caption the image measures
how much language-relevant information the image features carry in a linearly accessible form: the
paper's comparison of a supervised, a self-supervised (BEiT) and a language-supervised (CLIP) encoder.

Here the LM is the small caption LM of caption_lm.py (trained from scratch on the training captions,
then frozen), features are the backbone's pooled features (standardised on the training images so random
and trained backbones start the map's optimisation on equal footing; a linear map could absorb the
affine change), and captions are decoded greedily.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn

from pretrainlab.language.caption_lm import CaptionLanguageModel
from pretrainlab.language.text_metrics import corpus_bleu, object_exact_match, object_f1, words


@dataclass(frozen=True)
class LinearMapConfig:
    """Args:
        epochs, batch_size, lr: AdamW training of the map (the LM and the image features stay frozen).
        max_new_tokens: caption length limit when decoding.
    """

    epochs: int = 20
    batch_size: int = 128
    lr: float = 1e-2
    max_new_tokens: int = 30


class LinearMap(nn.Module):
    """features (B, D) -> prefix (B, P, W): one linear layer, reshaped into P soft prompt vectors."""

    def __init__(self, feature_dim: int, prefix_tokens: int, width: int) -> None:
        super().__init__()
        self.prefix_tokens, self.width = prefix_tokens, width
        self.linear = nn.Linear(feature_dim, prefix_tokens * width)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features).reshape(len(features), self.prefix_tokens, self.width)


def standardise(train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    mean, std = train.mean(dim=0), train.std(dim=0).clamp(min=1e-6)
    return [(x - mean) / std for x in (train, *others)]


def fit_linear_map(features: torch.Tensor, captions: Sequence[Sequence[str]], lm: CaptionLanguageModel,
                   config: LinearMapConfig, seed: int = 0) -> LinearMap:
    """Trains a `LinearMap` so that `lm`, prompted with mapped features (N, D), generates each image's captions.

    Every epoch each image contributes one of its captions, drawn by `seed`.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mapping = LinearMap(features.shape[1], lm.config.prefix_tokens, lm.width)
    encoded = [lm.tokenizer.encode(list(image_captions)) for image_captions in captions]  # N x (K_i, L)
    counts = torch.tensor([len(c) for c in encoded])
    batch = min(config.batch_size, len(features))
    optimizer = torch.optim.AdamW(mapping.parameters(), lr=config.lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.epochs * (len(features) // batch))
    for _ in range(config.epochs):
        order = torch.randperm(len(features), generator=generator)
        picks = (torch.rand(len(features), generator=generator) * counts).long()  # one caption per image
        for start in range(0, len(features) - batch + 1, batch):
            rows = order[start : start + batch]
            ids = torch.stack([encoded[int(r)][int(picks[r])] for r in rows])  # (b, L)
            loss = lm.caption_loss(ids, mapping(features[rows]))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    return mapping.eval().requires_grad_(False)


@torch.no_grad()
def generate_captions(mapping: LinearMap, lm: CaptionLanguageModel, features: torch.Tensor,
                      max_new_tokens: int = 30, batch_size: int = 256) -> list[str]:
    """Greedy captions of images with pooled features (N, D)."""
    captions = []
    for start in range(0, len(features), batch_size):
        chunk = features[start : start + batch_size]
        captions.extend(lm.generate(mapping(chunk), len(chunk), max_new_tokens))
    return captions


def caption_quality(generated: Sequence[str], references: Sequence[Sequence[str]],
                    object_names: Sequence[str] | None) -> dict[str, float]:
    """{"bleu4": %, "object_exact_match": %, "object_f1": % (the last two when object names are known)}."""
    scores = {"bleu4": corpus_bleu([words(g) for g in generated], [[words(r) for r in refs] for refs in references])}
    if object_names:
        scores["object_exact_match"] = object_exact_match(generated, references, object_names)
        scores["object_f1"] = object_f1(generated, references, object_names)
    return scores
