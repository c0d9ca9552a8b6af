"""Starbucks masked autoencoding (SMAE) for images: MAE's reconstruction from every (layer, dim) sub-network.

Zhuang, Wang, Koopman, Zuccon, "Starbucks: Improved Training for 2D Matryoshka Embeddings", arXiv 2410.13230,
section 3.2: the masked-language-model and MAE-decoder losses are computed from the hidden states of each
target layer cut to its first `dim` channels, sharing one prediction head whose input weights are sliced
to `dim`, and averaged over the pairs. Here the text MLM becomes MAE's pixel reconstruction (He et al.,
arXiv 2111.06377): the encoder sees the visible patches once, and one shared light decoder reconstructs
the hidden patches from each pair's tokens. Feeding the first `dim` channels padded with zeros to the
shared decoder is exactly Starbucks' sliced input weight `W[:, :dim]`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from pretrainlab.backbones import Backbone
from pretrainlab.backbones.selected import FULL_DEPTH, encode_by_depth, num_blocks
from pretrainlab.backbones.vit_parts import gather_tokens, patch_embed_with_pos, patchify
from pretrainlab.data.masks import keep_indices, random_patch_mask
from pretrainlab.errors import PretrainlabError
from pretrainlab.heads import TokenDecoder
from pretrainlab.losses.reconstruction import masked_patch_loss


class NestedMaskedAutoencoding(nn.Module):
    """Mean over (depth, dim) pairs of MAE's masked-patch loss, reconstructed from that sub-network's tokens.

    Args:
        backbone: a vision transformer (its timm model is read, not stored here).
        pairs: (depth, dim) with depth in 1..blocks or FULL_DEPTH, dim in 1..embed_dim.
        in_chans: image channels (the decoder predicts p * p * in_chans values per patch).
        mask_ratio: share of patches hidden from the encoder (0.75 in MAE).
        decoder_dim, decoder_depth, decoder_heads: the shared light decoder.
        normalize_target: regress per-patch normalised pixels (MAE's better target).
    """

    def __init__(self, backbone: Backbone, pairs: Sequence[tuple[int, int]], in_chans: int, mask_ratio: float,
                 decoder_dim: int, decoder_depth: int, decoder_heads: int, normalize_target: bool = True) -> None:
        super().__init__()
        if not backbone.has_tokens:
            raise PretrainlabError(f"masked autoencoding needs a vision transformer, got '{backbone.name}'; "
                                   "set masked_weight=0 or use --backbone vit_nano_patch4")
        blocks = num_blocks(backbone)
        self.pairs = [(blocks if depth == FULL_DEPTH else depth, dim) for depth, dim in pairs]
        self.embed_dim = backbone.embed_dim
        self.patch_size = backbone.patch_size
        self.mask_ratio = mask_ratio
        self.normalize_target = normalize_target
        self.decoder = TokenDecoder(backbone.embed_dim, backbone.grid_size, decoder_dim, decoder_depth, decoder_heads,
                                    out_dim=self.patch_size * self.patch_size * in_chans)

    def forward(self, backbone: Backbone, images: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """images (B, C, H, W) normalised -> scalar loss, averaged over the pairs."""
        vit = backbone.model
        tokens = patch_embed_with_pos(vit, images)  # (B, N, D)
        num_patches = tokens.shape[1]
        mask = random_patch_mask(images.shape[0], num_patches, self.mask_ratio, generator, images.device)
        visible_index, _ = keep_indices(mask)  # (B, K)
        encoded = encode_by_depth(vit, gather_tokens(tokens, visible_index), [depth for depth, _ in self.pairs])
        target = patchify(images, self.patch_size)  # (B, N, p * p * C)
        losses = []
        for depth, dim in self.pairs:
            visible = encoded[depth][:, backbone.num_prefix_tokens :, :dim]  # (B, K, dim)
            padded = F.pad(visible, (0, self.embed_dim - dim))  # the shared decoder sees zeros past `dim`
            prediction = self.decoder(padded, visible_index, num_patches)
            losses.append(masked_patch_loss(prediction, target, mask, self.normalize_target))
        return torch.stack(losses).mean()
