"""Masked token modelling on code grids, with TokenAdapt and ColorAdapt.

Lee, Park, Heo, Han, Shim, "SeiT++: Masked Token Modeling Improves Storage-efficient Training", arXiv 2312.10105
(building on SeiT, arXiv 2303.11114, and MAGE's masked token modelling, arXiv 2211.09117).

The data are VQ code grids (`--data tokens:PATH`); the backbone is a token ViT (backbones/token_vit.py). Each
step draws one mask ratio from a normal of mean 0.55 and std 0.25 truncated to [0.5, 1] (MAGE's schedule, as in
SeiT++), hides that share of every grid's cells behind a learned mask token, runs the whole grid through the
encoder, and a small transformer decoder predicts the code of every cell; the loss is label-smoothed
cross-entropy on the hidden cells (losses/masked_tokens.py). The output layer scores codes against the encoder's
own code embeddings (weight tying, detached as in SeiT++'s MlmLayer), plus a bias per code.

Augmentation happens in token space (data/tokens/adapt.py): TokenAdapt (random resized crop and flip through the
tokenizer's learned conversion and inversion) and ColorAdapt (AdaIN between images of the batch in codebook
space, re-quantised). Differences from the paper, for 2-core CPU budgets: every cell enters the encoder (MAGE
also drops the cells of the minimum ratio), the decoder is 2 blocks of 128 rather than 4 of 512, and the
restyled vectors of ColorAdapt are re-quantised because the token backbones take codes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from timm.models.vision_transformer import Block

from pretrainlab.backbones import Backbone
from pretrainlab.data.tokens.adapt import color_adapt, token_adapt
from pretrainlab.data.tokens.token_file import codes_from_bytes
from pretrainlab.data.views import to_float
from pretrainlab.losses.masked_tokens import masked_token_loss
from pretrainlab.methods.base import Batch, Method, MethodContext, register_method


@dataclass(frozen=True)
class MTMConfig:
    """Args:
        mask_ratio_min, mask_ratio_max, mask_ratio_mean, mask_ratio_std: the truncated normal of mask ratios.
        decoder_dim, decoder_depth, decoder_heads: the transformer decoder.
        label_smoothing: of the cross-entropy (0.1 in SeiT++).
        token_adapt_p: share of images cropped and flipped through TokenAdapt each step.
        crop_min_scale: smallest crop area of TokenAdapt (the tokenizer learned 0.25-1 by default).
        color_adapt_p: share of images restyled by ColorAdapt each step.
    """

    mask_ratio_min: float = 0.5
    mask_ratio_max: float = 1.0
    mask_ratio_mean: float = 0.55
    mask_ratio_std: float = 0.25
    decoder_dim: int = 128
    decoder_depth: int = 2
    decoder_heads: int = 4
    label_smoothing: float = 0.1
    token_adapt_p: float = 0.5
    crop_min_scale: float = 0.25
    color_adapt_p: float = 0.25

    def __post_init__(self) -> None:
        if not 0 < self.mask_ratio_min <= self.mask_ratio_max <= 1 or self.mask_ratio_std <= 0:
            raise ValueError("mask ratios need 0 < mask_ratio_min <= mask_ratio_max <= 1 and mask_ratio_std > 0")
        for name in ("token_adapt_p", "color_adapt_p"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} is a probability in [0, 1], got {getattr(self, name)}")
        if not 0 < self.crop_min_scale <= 1:
            raise ValueError(f"crop_min_scale must be in (0, 1], got {self.crop_min_scale}")


def truncated_normal(mean: float, std: float, low: float, high: float, generator: torch.Generator | None) -> float:
    """One draw of a normal truncated to [low, high], by rejection (a handful of draws at SeiT++'s settings)."""
    for _ in range(1000):
        value = mean + std * float(torch.randn(1, generator=generator))
        if low <= value <= high:
            return value
    return min(max(mean, low), high)


def random_cell_mask(batch: int, cells: int, ratio: float, generator: torch.Generator | None,
                     device: torch.device) -> torch.Tensor:
    """(B, N) bool with ceil(ratio * N) hidden cells (at least one) per row, chosen uniformly."""
    hidden = min(cells, max(1, int(torch.tensor(ratio * cells).ceil())))
    noise = torch.rand(batch, cells, generator=generator, device=device)
    ranks = noise.argsort(dim=1).argsort(dim=1)
    return ranks < hidden


@register_method("mtm")
class MaskedTokenModeling(Method):
    """Hide cells of a code grid, predict their codes from the rest."""

    config_class = MTMConfig
    takes_code_grids = True
    example_options = {"decoder_dim": 16, "decoder_depth": 1, "decoder_heads": 2}

    def __init__(self, backbone: Backbone, config: MTMConfig, context: MethodContext) -> None:
        super().__init__(backbone, config, context)
        vit = backbone.model
        width, cells = backbone.embed_dim, backbone.grid_size[0] * backbone.grid_size[1]
        self.mask_token = nn.Parameter(torch.zeros(width))
        nn.init.normal_(self.mask_token, std=0.02)
        self.decoder_embed = nn.Linear(width, config.decoder_dim)
        self.decoder_pos = nn.Parameter(torch.zeros(1, vit.num_prefix_tokens + cells, config.decoder_dim))
        nn.init.normal_(self.decoder_pos, std=0.02)
        self.decoder_blocks = nn.Sequential(*[Block(config.decoder_dim, config.decoder_heads, qkv_bias=True)
                                              for _ in range(config.decoder_depth)])
        self.decoder_norm = nn.LayerNorm(config.decoder_dim)
        self.to_code_space = nn.Sequential(nn.Linear(config.decoder_dim, width), nn.GELU(), nn.LayerNorm(width))
        self.code_bias = nn.Parameter(torch.zeros(vit.codebook_size))
        self._tokenizer = context.tokenizer  # frozen, never a sub-module: not trained, saved or sharded

    @torch.no_grad()
    def prepare_batch(self, images_uint8: torch.Tensor, labels: torch.Tensor | None,
                      generator: torch.Generator) -> Batch:
        """(B, h, w, C) uint8 code bytes -> Batch.extra["codes"] (B, h, w) int64, augmented in token space."""
        codes = codes_from_bytes(images_uint8.permute(0, 3, 1, 2))
        tokenizer = self._tokenizer
        if tokenizer is not None and (self.config.token_adapt_p > 0 or self.config.color_adapt_p > 0):
            adapter, codebook = tokenizer.adapter.to(codes.device), tokenizer.codebook.to(codes.device)
            codes = token_adapt(codes, adapter, codebook, self.config.token_adapt_p,
                                (self.config.crop_min_scale, 1.0), generator)
            codes = color_adapt(codes, codebook, self.config.color_adapt_p, generator)
        return Batch(views={}, images=to_float(images_uint8), labels=labels, generator=generator,
                     extra={"codes": codes})

    def encode(self, codes: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """codes (B, h, w), mask (B, N) -> encoder output (B, P + N, D), hidden cells as the mask token."""
        vit = self.backbone.model
        tokens = vit.patch_embed.embedding(codes).flatten(1, 2)  # (B, N, D)
        tokens = torch.where(mask[..., None], self.mask_token.to(tokens.dtype), tokens)
        tokens = vit.norm_pre(vit.patch_drop(vit._pos_embed(tokens)))  # prefix tokens + position embedding
        return vit.norm(vit.blocks(tokens))

    def decode(self, encoded: torch.Tensor) -> torch.Tensor:
        """(B, P + N, D) -> code logits (B, N, K), scored against the encoder's code embeddings."""
        x = self.decoder_norm(self.decoder_blocks(self.decoder_embed(encoded) + self.decoder_pos))
        hidden = self.to_code_space(x[:, self.backbone.num_prefix_tokens :])  # (B, N, D)
        table = self.backbone.model.patch_embed.embedding.weight.detach()  # (K, D)
        return hidden @ table.t() + self.code_bias

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        codes = batch.extra["codes"]  # (B, h, w)
        config = self.config
        ratio = truncated_normal(config.mask_ratio_mean, config.mask_ratio_std, config.mask_ratio_min,
                                 config.mask_ratio_max, batch.generator)
        mask = random_cell_mask(codes.shape[0], codes[0].numel(), ratio, batch.generator, codes.device)
        logits = self.decode(self.encode(codes, mask))
        targets = codes.flatten(1)
        loss = masked_token_loss(logits, targets, mask, config.label_smoothing)
        accuracy = ((logits.argmax(-1) == targets) & mask).sum() / mask.sum().clamp(min=1)
        return {"loss": loss, "mask_ratio": torch.tensor(ratio), "masked_accuracy": accuracy.detach()}

    @torch.no_grad()
    def reconstruction_grid(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Code bytes (B, C, h, w) -> (3 B, C_img, H, W) in [0, 1], decoded by the tokenizer: the grids, the grids
        with hidden cells grey (a 0.55 ratio), and the grids with the predicted codes in the hidden cells."""
        codes = codes_from_bytes(images)  # (B, h, w)
        mask = random_cell_mask(codes.shape[0], codes[0].numel(), self.config.mask_ratio_mean, generator,
                                codes.device)
        predicted = torch.where(mask, self.decode(self.encode(codes, mask)).argmax(-1), codes.flatten(1))
        vq = self._tokenizer.vq.to(codes.device)
        original = vq.decode(codes)  # (B, C_img, H, W)
        scale = original.shape[-1] // codes.shape[-1]
        hidden = mask.reshape(codes.shape)[:, None].repeat_interleave(scale, 2).repeat_interleave(scale, 3)
        masked = torch.where(hidden, torch.full_like(original, 0.5), original)
        return torch.cat([original, masked, vq.decode(predicted.reshape(codes.shape))])
