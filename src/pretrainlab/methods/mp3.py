"""MP3, masked position prediction: a ViT without position embeddings tells where each patch came from.

Zhai, Jaitly, Ramapuram, Busbridge, Likhomanenko, Cheng, Talbott, Huang, Goh, Susskind, "Position
Prediction as an Effective Pretraining Strategy", arXiv 2207.07611.

The patches enter the transformer with no position information. A random subset of them (1 - mask_ratio)
is the context: in every block all tokens are queries but only the context tokens (and the class token) are
keys and values, so the context tokens' states are exactly those of an encoder run on the context alone and
the other tokens locate themselves against it. A linear head classifies every patch token into one of the N
grid positions (cross-entropy); solving it from content alone needs an understanding of how parts of an
object relate. Masking the context is what keeps the task from being solvable by local texture matching.

Position embedding and export: the backbone stays a plain timm VisionTransformer. Its `pos_embed` is set to
zero and frozen (`requires_grad=False`) when the method is built, and the pre-training never adds anything
else, so the exported `backbone.safetensors` holds a zero `pos_embed`: timm's standard forward, which kNN,
linear probing and fine-tuning run, adds zeros and computes exactly the position-free encoder trained here
(with no masked context). A fine-tuning that wants positions can learn `pos_embed` from that zero start.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from pretrainlab.backbones import Backbone
from pretrainlab.backbones.vit_parts import encode_tokens, patch_embed_any_size
from pretrainlab.data.masks import random_patch_mask
from pretrainlab.data.views import ViewSpec
from pretrainlab.methods.base import Batch, Method, MethodContext, register_method


@dataclass(frozen=True)
class MP3Config:
    """Args:
        mask_ratio: share of patches removed from the keys and values (the paper's eta; 0.75).
        label_smoothing: of the position cross-entropy (0 in the paper).
        crop_min_scale: random-resized-crop lower bound.
    """

    mask_ratio: float = 0.75
    label_smoothing: float = 0.0
    crop_min_scale: float = 0.2


def context_attention_mask(context: torch.Tensor, num_prefix: int) -> torch.Tensor:
    """context (B, N) bool, True = may be attended to -> (B, 1, P + N, P + N) bool: every query, context keys.

    Prefix tokens (class, registers) are always keys.
    """
    batch, num_patches = context.shape
    keys = torch.cat([context.new_ones(batch, num_prefix), context], dim=1)  # (B, P + N)
    return keys[:, None, None, :].expand(batch, 1, num_prefix + num_patches, num_prefix + num_patches)


@register_method("mp3")
class MP3(Method):
    """Patch tokens without positions, a masked context, a linear classifier over the N positions."""

    config_class = MP3Config
    needs_tokens = True
    example_options = {}

    def __init__(self, backbone: Backbone, config: MP3Config, context: MethodContext) -> None:
        super().__init__(backbone, config, context)
        vit = backbone.model
        if getattr(vit, "pos_embed", None) is not None:
            with torch.no_grad():
                vit.pos_embed.zero_()
            vit.pos_embed.requires_grad_(False)  # stays zero: the optimiser skips frozen parameters
        num_patches = backbone.grid_size[0] * backbone.grid_size[1]
        self.position_head = nn.Linear(backbone.embed_dim, num_patches)

    def view_specs(self) -> dict[str, ViewSpec]:
        return {"base": ViewSpec(self.context.img_size, crop_scale=(self.config.crop_min_scale, 1.0), jitter_p=0.0,
                                 grayscale_p=0.0)}

    def encode(self, images: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """Position-free patch tokens (B, N, D) of images (B, C, H, W); context (B, N) bool limits the keys."""
        vit = self.backbone.model
        tokens, _ = patch_embed_any_size(vit, images)  # (B, N, D), no position added
        attn_mask = None if context is None else context_attention_mask(context, self.backbone.num_prefix_tokens)
        encoded = encode_tokens(vit, tokens, attn_mask)  # prefix tokens get pos_embed, which is zero
        return encoded[:, self.backbone.num_prefix_tokens :]

    def position_logits(self, images: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """(B, N, N): for each patch token, a score per grid position (row-major)."""
        return self.position_head(self.encode(images, context))

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        images = batch.views["base"][0].images
        num_patches = self.position_head.out_features
        hidden = random_patch_mask(images.shape[0], num_patches, self.config.mask_ratio, batch.generator,
                                   images.device)
        logits = self.position_logits(images, ~hidden)
        labels = torch.arange(num_patches, device=images.device).expand(images.shape[0], -1)  # (B, N)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(),
                               label_smoothing=self.config.label_smoothing)
        accuracy = (logits.argmax(dim=-1) == labels).float().mean()
        return {"loss": loss, "position_accuracy": accuracy.detach()}
