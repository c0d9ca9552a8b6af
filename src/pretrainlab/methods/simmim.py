"""SimMIM: mask tokens in the encoder and a one-layer linear decoder that regresses the hidden pixels.

Xie, Zhang, Cao, Lin, Bao, Yao, Dai, Hu, "SimMIM: A Simple Framework for Masked Image Modeling",
arXiv 2111.09886.

Unlike MAE, every patch goes through the encoder: a hidden patch's embedding is replaced by one learned
mask token before its position embedding is added, so the network knows where content is missing but not
what it shows. A single linear layer maps each output token to its patch's pixels, and an L1 loss on the
hidden patches' (normalised) pixels trains both. Mask patches may be larger than the model's patches
(`mask_block`); the paper found 32 px mask patches (2 x 2 ViT-B patches) with a 0.6 ratio best.

`--option mto=W` adds masked token optimisation (arXiv 2404.08330, methods/parts/mto.py), which the MTO
paper applies to SimMIM as well as MAE. Here, unlike in MAE, it acts on the encoder itself: its blocks
are the ones that see mask tokens, so visible tokens' queries ignore them and the singularity loss pulls
mask tokens' attention onto visible tokens. Features for evaluation have no mask tokens, so the
exported backbone runs unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from timm.models.vision_transformer import Block

from pretrainlab.backbones import Backbone
from pretrainlab.backbones.vit_parts import embed_tokens, encode_any_size, patchify
from pretrainlab.data.masks import coarse_patch_mask
from pretrainlab.data.views import ViewSpec
from pretrainlab.errors import PretrainlabError
from pretrainlab.losses.reconstruction import masked_patch_loss
from pretrainlab.methods.base import Batch, Method, MethodContext, register_method
from pretrainlab.methods.parts.mto import run_blocks_with_mto
from pretrainlab.methods.parts.reconstruction import patch_reconstruction_grid


@dataclass(frozen=True)
class SimMIMConfig:
    """Args:
        mask_ratio: share of mask patches hidden (0.6 in the paper).
        mask_block: side of a mask patch in ViT patches (2 in the paper's ViT-B setting: 32 px over 16 px).
        norm_pix_loss: regress per-patch normalised pixels instead of the normalised image (off in the paper).
        crop_min_scale: random-resized-crop lower bound (0.67 in the paper).
        mto: weight of masked token optimisation in the encoder (methods/parts/mto.py, arXiv 2404.08330); 0: off.
        mto_exclude: with mto > 0, visible tokens' queries ignore mask tokens in the encoder (weight recalibration).
    """

    mask_ratio: float = 0.6
    mask_block: int = 2
    norm_pix_loss: bool = False
    crop_min_scale: float = 0.67
    mto: float = 0.0
    mto_exclude: bool = True

    def __post_init__(self) -> None:
        if self.mto < 0:
            raise ValueError(f"mto must be >= 0 (0 turns masked token optimisation off), got {self.mto}")


@register_method("simmim")
class SimMIM(Method):
    """The whole token grid, hidden patches replaced by a mask token, through the ViT; a linear head to pixels."""

    config_class = SimMIMConfig
    needs_tokens = True
    example_options = {}

    def __init__(self, backbone: Backbone, config: SimMIMConfig, context: MethodContext) -> None:
        super().__init__(backbone, config, context)
        self.mask_token = nn.Parameter(torch.zeros(backbone.embed_dim))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        patch = backbone.patch_size
        self.decoder = nn.Linear(backbone.embed_dim, patch * patch * context.in_chans)
        if config.mto > 0 and not all(isinstance(block, Block) for block in backbone.model.blocks):
            raise PretrainlabError(f"--option mto needs a plain timm ViT (vision_transformer.Block blocks); "
                                   f"backbone '{backbone.name}' has other blocks: use mto=0 or a vit_* backbone")

    def view_specs(self) -> dict[str, ViewSpec]:
        return {"base": ViewSpec(self.context.img_size, crop_scale=(self.config.crop_min_scale, 1.0), jitter_p=0.0,
                                 grayscale_p=0.0)}

    def draw_mask(self, batch: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
        """(B, N) bool, True = hidden."""
        return coarse_patch_mask(batch, self.backbone.grid_size, self.config.mask_block, self.config.mask_ratio,
                                 generator, device)

    def encode(self, images: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images (B, C, H, W), mask (B, N) -> (all tokens (B, P + N, D), MTO loss: 0 unless `mto` > 0)."""
        vit = self.backbone.model
        if self.config.mto <= 0:
            encoded = encode_any_size(vit, images, mask, self.mask_token)
            return encoded, encoded.new_zeros(())
        # encode_any_size's tokens, with the blocks run by MTO (prefix tokens count as visible)
        tokens, _ = embed_tokens(vit, images, mask, self.mask_token)  # (B, P + N, D)
        is_mask = torch.cat([mask.new_zeros(mask.shape[0], tokens.shape[1] - mask.shape[1]), mask], dim=1)
        tokens, mto_loss = run_blocks_with_mto(vit.blocks, tokens, is_mask, self.config.mto_exclude)
        return vit.norm(tokens), mto_loss

    def reconstruct(self, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """images (B, C, H, W), mask (B, N) -> predicted patches (B, N, p * p * C)."""
        return self.predict(images, mask)[0]

    def predict(self, images: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (predicted patches (B, N, p * p * C), MTO loss)."""
        encoded, mto_loss = self.encode(images, mask)  # (B, P + N, D)
        return self.decoder(encoded[:, self.backbone.num_prefix_tokens :]), mto_loss

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        images = batch.views["base"][0].images
        mask = self.draw_mask(images.shape[0], batch.generator, images.device)
        prediction, mto_loss = self.predict(images, mask)
        loss = masked_patch_loss(prediction, patchify(images, self.backbone.patch_size), mask,
                                 self.config.norm_pix_loss, distance="absolute")
        outputs = {"loss": loss + self.config.mto * mto_loss, "reconstruction_loss": loss.detach()}
        if self.config.mto > 0:
            outputs["mto_loss"] = mto_loss.detach()
        return outputs

    @torch.no_grad()
    def reconstruction_grid(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        mask = self.draw_mask(images.shape[0], generator, images.device)
        return patch_reconstruction_grid(images, self.reconstruct(images, mask), mask, self.backbone.patch_size,
                                         self.mean, self.std, self.config.norm_pix_loss)
