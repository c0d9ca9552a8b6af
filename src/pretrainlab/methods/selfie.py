"""Selfie: mask patches, then pick the right patch for each masked location among distractors.

Trinh, Luong, Le, "Selfie: Self-supervised Pretraining for Image Embedding", arXiv 1906.02940.

The image is cut into a grid of patches (4x4 patches of 8x8 px at 32 px, the paper's CIFAR-10 setting).
The patch network P (here: the backbone, which is what gets exported, as the paper reuses P's
convolutional weights) turns every patch into a vector. The visible patches' vectors go through the attention
pooling network, which summarises them into u. For each masked location, u plus that location's position
embedding is the query; it must select the location's own patch among all masked patches of the same image
(a contrastive predictive coding loss). The paper's P is the first three blocks of a ResNet-50; here it
is any convolutional backbone, applied to one patch at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from pretrainlab.backbones import Backbone
from pretrainlab.backbones.vit_parts import gather_tokens
from pretrainlab.data.masks import keep_indices, random_patch_mask
from pretrainlab.data.views import ViewSpec
from pretrainlab.errors import PretrainlabError
from pretrainlab.heads.attention_pooling import AttentionPooling, RowColumnEmbedding
from pretrainlab.losses.patch_selection import patch_selection_loss
from pretrainlab.methods.base import Batch, Method, MethodContext, ViewOptions, register_method

MIN_PATCH_SIZE = 4


@dataclass(frozen=True)
class SelfieConfig:
    """Args:
        grid: patches per side (4 for 32 px images: 16 patches of 8x8, as in the paper).
        mask_ratio: share of patches masked and predicted; at least 2 must be masked for a choice to exist
            and 1 kept for the context (the paper's figure masks 3 of 9).
        pooling_depth, pooling_heads: transformer layers and heads of the attention pooling network.
        visible_positions: also add position embeddings to the visible patches before pooling. The paper adds
            them only to the pooled u, at the query location: the pooling is then order-free and must infer
            the missing content from what the visible patches show, not from where they are.
        views: augmentation of the image before cutting it (the paper: random crop and flip only).
    """

    grid: int = 4
    mask_ratio: float = 0.25
    pooling_depth: int = 2
    pooling_heads: int = 4
    visible_positions: bool = False
    views: ViewOptions = field(default_factory=lambda: ViewOptions(crop_min_scale=0.5, jitter_strength=0.0,
                                                                   grayscale_p=0.0))


def split_patches(images: torch.Tensor, grid: int) -> torch.Tensor:
    """(B, C, S, S) with S divisible by grid -> (B, grid * grid, C, p, p), patches in row-major order."""
    batch, channels, size, _ = images.shape
    patch = size // grid
    tiles = images.unfold(2, patch, patch).unfold(3, patch, patch)  # (B, C, grid, grid, p, p)
    return tiles.permute(0, 2, 3, 1, 4, 5).reshape(batch, grid * grid, channels, patch, patch)


def masked_counts(grid: int, mask_ratio: float) -> int:
    """How many of the grid * grid patches are masked; raises when no real choice or no context is left."""
    total = grid * grid
    masked = int(round(mask_ratio * total))
    if not 2 <= masked < total:
        raise PretrainlabError(
            f"selfie masks {masked} of {total} patches (grid {grid}, mask_ratio {mask_ratio}); it needs at least "
            f"2 masked (a choice among distractors) and 1 visible: use mask_ratio in [{2 / total:.3f}, "
            f"{(total - 1) / total:.3f}]"
        )
    return masked


@register_method("selfie")
class Selfie(Method):
    """Patch network = backbone, attention pooling over visible patches, patch selection loss."""

    config_class = SelfieConfig
    example_options = {"pooling_depth": 1, "pooling_heads": 2}

    def __init__(self, backbone: Backbone, config: SelfieConfig, context: MethodContext) -> None:
        super().__init__(backbone, config, context)
        patch = context.img_size // config.grid
        if config.grid < 2 or patch < MIN_PATCH_SIZE:
            raise PretrainlabError(
                f"selfie grid {config.grid} cuts {context.img_size} px images into {patch} px patches; use a grid "
                f">= 2 with patches of at least {MIN_PATCH_SIZE} px (grid <= {context.img_size // MIN_PATCH_SIZE})"
            )
        if backbone.has_tokens:
            raise PretrainlabError(
                f"selfie runs its patch network on {patch} px patches, which a fixed-size ViT such as "
                f"'{backbone.name}' cannot take; use a convolutional backbone (tinycnn, resnet18_cifar)"
            )
        masked_counts(config.grid, config.mask_ratio)  # fails early on a ratio without a real choice
        if config.pooling_depth < 1 or config.pooling_heads < 1 or backbone.embed_dim % config.pooling_heads:
            raise PretrainlabError(
                f"selfie pooling needs pooling_depth >= 1 and pooling_heads dividing the backbone width "
                f"{backbone.embed_dim}, got depth {config.pooling_depth} and {config.pooling_heads} heads"
            )
        self.view_size = patch * config.grid  # the largest size the grid divides (28 -> 28, 30 -> 28)
        dim = backbone.embed_dim
        self.positions = RowColumnEmbedding(config.grid, dim)
        self.pooling = AttentionPooling(dim, config.pooling_depth, config.pooling_heads)

    def view_specs(self) -> dict[str, ViewSpec]:
        return {"base": self.config.views.spec(self.view_size)}

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        images = batch.views["base"][0].images  # (B, C, S, S)
        grid, batch_size = self.config.grid, images.shape[0]
        patches = split_patches(images, grid)  # (B, N, C, p, p)
        num_patches = patches.shape[1]
        # The patch network sees each patch on its own, as in the paper; one pass for all B * N patches.
        vectors = self.backbone.pooled(patches.flatten(0, 1)).view(batch_size, num_patches, -1)  # (B, N, D)
        num_masked = masked_counts(grid, self.config.mask_ratio)
        mask = random_patch_mask(batch_size, num_patches, num_masked / num_patches, batch.generator, images.device)
        visible_index, masked_index = keep_indices(mask)  # (B, N - M), (B, M)
        context = gather_tokens(vectors, visible_index)  # (B, N - M, D)
        if self.config.visible_positions:
            context = context + self.positions(visible_index)
        summary = self.pooling(context)  # (B, D)
        queries = summary[:, None] + self.positions(masked_index)  # (B, M, D)
        candidates = gather_tokens(vectors, masked_index)  # (B, M, D)
        loss, accuracy = patch_selection_loss(queries, candidates)
        return {"loss": loss, "selection_accuracy": accuracy}
