"""MAE: hide most patches, encode only the visible ones, reconstruct the hidden pixels.

He, Chen, Xie, Li, Dollar, Girshick, "Masked Autoencoders Are Scalable Vision Learners", arXiv 2111.06377.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pretrainlab.backbones import Backbone
from pretrainlab.backbones.vit_parts import encode_tokens, gather_tokens, patch_embed_with_pos, patchify
from pretrainlab.data.masks import keep_indices, random_patch_mask
from pretrainlab.data.views import ViewSpec
from pretrainlab.heads import TokenDecoder
from pretrainlab.losses.reconstruction import masked_patch_loss
from pretrainlab.methods.base import Batch, Method, MethodContext, register_method
from pretrainlab.methods.parts.mto import run_blocks_with_mto
from pretrainlab.methods.parts.reconstruction import patch_reconstruction_grid

__all__ = ["MAE", "MAEConfig", "masked_patch_loss"]  # masked_patch_loss moved to losses/, still importable here


@dataclass(frozen=True)
class MAEConfig:
    """Args:
        mask_ratio: share of patches hidden from the encoder (0.75 in the paper).
        norm_pix_loss: regress per-patch normalised pixels (the paper's better target).
        decoder_dim, decoder_depth, decoder_heads: the light decoder (512/8/16 for ViT-L; smaller here).
        crop_min_scale: random-resized-crop lower bound (0.2 in the paper).
        mto: weight of masked token optimisation in the decoder (methods/mto.py, arXiv 2404.08330); 0: off.
        mto_exclude: with mto > 0, visible tokens' queries ignore mask tokens in the decoder (weight recalibration).
    """

    mask_ratio: float = 0.75
    norm_pix_loss: bool = True
    decoder_dim: int = 128
    decoder_depth: int = 2
    decoder_heads: int = 4
    crop_min_scale: float = 0.2
    mto: float = 0.0
    mto_exclude: bool = True


@register_method("mae")
class MAE(Method):
    """Asymmetric encoder-decoder: the ViT sees ~25 % of patches, a small decoder predicts the rest."""

    config_class = MAEConfig
    needs_tokens = True
    example_options = {"decoder_dim": 32, "decoder_depth": 1, "decoder_heads": 2}

    def __init__(self, backbone: Backbone, config: MAEConfig, context: MethodContext) -> None:
        super().__init__(backbone, config, context)
        patch = backbone.patch_size
        self.decoder = TokenDecoder(
            backbone.embed_dim, backbone.grid_size, config.decoder_dim, config.decoder_depth, config.decoder_heads,
            out_dim=patch * patch * context.in_chans,
        )

    def view_specs(self) -> dict[str, ViewSpec]:
        return {"base": ViewSpec(self.context.img_size, crop_scale=(self.config.crop_min_scale, 1.0), jitter_p=0.0,
                                 grayscale_p=0.0)}

    def encode_visible(self, images: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images (B, C, H, W), mask (B, N) -> (encoded visible patch tokens (B, K, D), their positions (B, K))."""
        vit = self.backbone.model
        tokens = patch_embed_with_pos(vit, images)  # (B, N, D)
        visible_index, _ = keep_indices(mask)  # (B, K)
        encoded = encode_tokens(vit, gather_tokens(tokens, visible_index))  # (B, P + K, D)
        return encoded[:, self.backbone.num_prefix_tokens :], visible_index

    def decode(self, visible: torch.Tensor, visible_index: torch.Tensor,
               mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (prediction (B, N, p*p*C), masked-token-optimisation loss: 0 unless `mto` > 0)."""
        tokens = self.decoder.fill(visible, visible_index, mask.shape[1])  # (B, N, d)
        if self.config.mto > 0:
            tokens, mto_loss = run_blocks_with_mto(self.decoder.blocks, tokens, mask, self.config.mto_exclude)
            return self.decoder.head(tokens), mto_loss
        for block in self.decoder.blocks:
            tokens = block(tokens)
        return self.decoder.head(tokens), tokens.new_zeros(())

    def reconstruct(self, images: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images (B, C, H, W), mask (B, N) -> (prediction (B, N, p*p*C), patchified target)."""
        prediction, _ = self.decode(*self.encode_visible(images, mask), mask)
        return prediction, patchify(images, self.backbone.patch_size)

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        images = batch.views["base"][0].images
        num_patches = self.backbone.grid_size[0] * self.backbone.grid_size[1]
        mask = random_patch_mask(images.shape[0], num_patches, self.config.mask_ratio, batch.generator, images.device)
        prediction, mto_loss = self.decode(*self.encode_visible(images, mask), mask)
        target = patchify(images, self.backbone.patch_size)
        loss = masked_patch_loss(prediction, target, mask, self.config.norm_pix_loss)
        outputs = {"loss": loss + self.config.mto * mto_loss, "reconstruction_loss": loss.detach()}
        if self.config.mto > 0:
            outputs["mto_loss"] = mto_loss.detach()
        return outputs

    @torch.no_grad()
    def reconstruction_grid(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        num_patches = self.backbone.grid_size[0] * self.backbone.grid_size[1]
        mask = random_patch_mask(images.shape[0], num_patches, self.config.mask_ratio, generator, images.device)
        prediction, _ = self.reconstruct(images, mask)
        return patch_reconstruction_grid(images, prediction, mask, self.backbone.patch_size, self.mean, self.std,
                                         self.config.norm_pix_loss)
