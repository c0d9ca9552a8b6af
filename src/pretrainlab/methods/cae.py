"""CAE, the Context Autoencoder: predict the hidden patches' representations in the encoder's own space,
then decode pixels from those predictions.

Chen, Ding, Wang, Xin, Fan, Chen, Han, Luo, Zeng, Wang, "Context Autoencoder for Self-Supervised
Representation Learning", arXiv 2202.03026.

The ViT encoder sees only the visible patches. A latent contextual regressor (cross-attention: mask queries
attend to the visible latents and to themselves) predicts representations of the hidden patches; they are
aligned (MSE) with what the same encoder computes from the hidden patches themselves, without gradient.
A decoder that never sees the visible latents reconstructs the hidden patches' pixels from the predicted
representations alone, which forces the prediction, not the decoder, to carry the content. The loss is
reconstruction + `alignment_weight` x alignment (2 in the paper). Differences from the paper: pixel targets
(per-patch normalised, the paper's main results use DALL-E tokens), random instead of block-wise masks,
the position embedding is added to keys and values alike (the paper adds it to keys only), and the target
latents are layer-normalised per token without parameters: timm ViTs with average pooling (the small-image
ones here) end their token sequence without a norm (`fc_norm` comes after pooling), so their token scale is
free, and an unnormalised alignment target made the weighted alignment term outweigh reconstruction six-fold.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import Mlp
from timm.models.vision_transformer import Block

from pretrainlab.backbones import Backbone
from pretrainlab.backbones.vit_parts import encode_tokens, gather_tokens, patch_embed_with_pos, patchify
from pretrainlab.data.masks import keep_indices, random_patch_mask
from pretrainlab.data.views import ViewSpec
from pretrainlab.heads.cross_decoder import CrossAttention, scatter_to_grid
from pretrainlab.heads.pos_embed import sincos_2d
from pretrainlab.losses.reconstruction import masked_patch_loss
from pretrainlab.methods.base import Batch, Method, MethodContext, register_method
from pretrainlab.methods.parts.reconstruction import patch_reconstruction_grid


@dataclass(frozen=True)
class CAEConfig:
    """Args:
        mask_ratio: share of patches hidden (about 0.5 in the paper: 98 of 196 patches).
        regressor_depth, decoder_depth, num_heads: the regressor and decoder (4 and 4 blocks for ViT-B).
        alignment_weight: weight of the representation-alignment loss (2 in the paper).
        norm_pix_loss: reconstruct per-patch normalised pixels.
        crop_min_scale: random-resized-crop lower bound.
    """

    mask_ratio: float = 0.5
    regressor_depth: int = 2
    decoder_depth: int = 2
    num_heads: int = 4
    alignment_weight: float = 2.0
    norm_pix_loss: bool = True
    crop_min_scale: float = 0.2


class RegressorBlock(nn.Module):
    """Mask queries (B, M, D) cross-attend to a context (B, K + M, D), then an MLP; pre-norm, residual.

    The context is the visible latents and the current queries, each with its position embedding.
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.norm_query = nn.LayerNorm(dim)
        self.norm_context = nn.LayerNorm(dim)
        self.attention = CrossAttention(dim, num_heads)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, 4 * dim)

    def forward(self, queries: torch.Tensor, query_positions: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """The positions (B, M, D) enter the attention of this block only, not the residual stream."""
        queries = queries + self.attention(self.norm_query(queries + query_positions), self.norm_context(context))
        return queries + self.mlp(self.norm_mlp(queries))


@register_method("cae")
class CAE(Method):
    """Encoder on visible patches, latent regressor to the hidden ones, pixel decoder from the predictions."""

    config_class = CAEConfig
    needs_tokens = True
    example_options = {"regressor_depth": 1, "decoder_depth": 1, "num_heads": 2}

    def __init__(self, backbone: Backbone, config: CAEConfig, context: MethodContext) -> None:
        super().__init__(backbone, config, context)
        dim, patch = backbone.embed_dim, backbone.patch_size
        self.mask_query = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.trunc_normal_(self.mask_query, std=0.02)
        self.register_buffer("positions", sincos_2d(dim, backbone.grid_size)[None], persistent=False)  # (1, N, D)
        self.regressor = nn.ModuleList(RegressorBlock(dim, config.num_heads) for _ in range(config.regressor_depth))
        self.regressor_norm = nn.LayerNorm(dim)
        self.decoder = nn.ModuleList(Block(dim, config.num_heads, qkv_bias=True) for _ in range(config.decoder_depth))
        self.decoder_norm = nn.LayerNorm(dim)
        self.predict = nn.Linear(dim, patch * patch * context.in_chans)

    def view_specs(self) -> dict[str, ViewSpec]:
        return {"base": ViewSpec(self.context.img_size, crop_scale=(self.config.crop_min_scale, 1.0), jitter_p=0.0,
                                 grayscale_p=0.0)}

    def encode(self, tokens: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """The encoder's patch latents (B, K, D) for the patches at index (B, K) of tokens (B, N, D)."""
        encoded = encode_tokens(self.backbone.model, gather_tokens(tokens, index))
        return encoded[:, self.backbone.num_prefix_tokens :]

    def regress(self, visible: torch.Tensor, visible_index: torch.Tensor, masked_index: torch.Tensor) -> torch.Tensor:
        """Predicted latents (B, M, D) of the hidden patches from the visible latents (B, K, D)."""
        positions = self.positions.expand(visible.shape[0], -1, -1)
        visible_positions = gather_tokens(positions, visible_index)
        masked_positions = gather_tokens(positions, masked_index)  # (B, M, D)
        queries = self.mask_query.expand(masked_index.shape[0], masked_index.shape[1], -1)
        for block in self.regressor:
            context = torch.cat([visible + visible_positions, queries + masked_positions], dim=1)
            queries = block(queries, masked_positions, context)
        return self.regressor_norm(queries)

    def decode(self, predicted: torch.Tensor, masked_index: torch.Tensor) -> torch.Tensor:
        """Pixels (B, M, p * p * C) of the hidden patches from their predicted latents (B, M, D) alone."""
        x = predicted + gather_tokens(self.positions.expand(predicted.shape[0], -1, -1), masked_index)
        for block in self.decoder:
            x = block(x)
        return self.predict(self.decoder_norm(x))

    def predict_hidden(self, images: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """images (B, C, H, W), mask (B, N) -> predicted latents, their targets and the hidden pixels."""
        tokens = patch_embed_with_pos(self.backbone.model, images)  # (B, N, D)
        visible_index, masked_index = keep_indices(mask)
        visible = self.encode(tokens, visible_index)
        with torch.no_grad():  # the alignment target: the encoder's own view of the hidden patches
            target = self.encode(tokens, masked_index)
            target = F.layer_norm(target, target.shape[-1:])  # (B, M, D), unit scale per token
        predicted = self.regress(visible, visible_index, masked_index)
        return {"predicted": predicted, "target": target, "pixels": self.decode(predicted, masked_index),
                "masked_index": masked_index}

    def draw_mask(self, batch: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
        num_patches = self.backbone.grid_size[0] * self.backbone.grid_size[1]
        return random_patch_mask(batch, num_patches, self.config.mask_ratio, generator, device)

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        images = batch.views["base"][0].images
        return self.losses(images, self.draw_mask(images.shape[0], batch.generator, images.device))

    def losses(self, images: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """images (B, C, H, W), mask (B, N) -> the total loss and its two parts."""
        out = self.predict_hidden(images, mask)
        hidden_pixels = gather_tokens(patchify(images, self.backbone.patch_size), out["masked_index"])  # (B, M, P)
        every_patch = torch.ones(hidden_pixels.shape[:2], dtype=torch.bool, device=images.device)
        reconstruction = masked_patch_loss(out["pixels"], hidden_pixels, every_patch, self.config.norm_pix_loss)
        alignment = F.mse_loss(out["predicted"].float(), out["target"].float())
        loss = reconstruction + self.config.alignment_weight * alignment
        return {"loss": loss, "reconstruction_loss": reconstruction.detach(), "alignment_loss": alignment.detach()}

    @torch.no_grad()
    def reconstruction_grid(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        mask = self.draw_mask(images.shape[0], generator, images.device)
        out = self.predict_hidden(images, mask)
        prediction = scatter_to_grid(out["pixels"], out["masked_index"], mask.shape[1])  # (B, N, P)
        return patch_reconstruction_grid(images, prediction, mask, self.backbone.patch_size, self.mean, self.std,
                                         self.config.norm_pix_loss)
