"""Attention probabilities of every block of a timm VisionTransformer, and the statistics of one attention map.

Built on `attention.block_with_probabilities` (timm's fused attention never forms the matrix). Used by the
explain layer (attention patterns) and by methods that distil attention (nmi_had), so it lives here, below both.

Statistics of an attention map A (queries x keys over the N patch tokens, rows renormalised after dropping
prefix tokens):
- mean attention distance (Dosovitskiy et al., ViT, arXiv 2010.11929, Fig. 7): sum_k A[q, k] |pos_q - pos_k|
  in pixels, averaged over queries;
- NMI between query and key positions (Park et al., "What Do Self-Supervised Vision Transformers Learn?",
  arXiv 2305.00729; UNIP, arXiv 2502.02257): with p(q) = 1/N and p(k | q) = A[q, k], I(Q; K) normalised by
  sqrt(H(Q) H(K)). 1: every query attends only to itself (or any one-to-one pattern); 0: every query attends
  the same way (global, or uniform).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from pretrainlab.backbones.attention import block_with_probabilities
from pretrainlab.backbones.vit_parts import embed_tokens
from pretrainlab.errors import PretrainlabError


def check_plain_blocks(vit: nn.Module) -> None:
    for index, block in enumerate(getattr(vit, "blocks", [])):
        if not all(hasattr(block, name) for name in ("norm1", "attn", "ls1", "drop_path1", "mlp", "norm2")) or \
                not hasattr(block.attn, "qkv"):
            raise PretrainlabError(f"block {index} of this transformer is not a timm ViT block (pre-norm attention "
                                   "with qkv); attention maps support timm VisionTransformer models")


def attention_maps(vit: nn.Module, images: torch.Tensor, last: int | None = None
                   ) -> tuple[list[torch.Tensor], tuple[int, int]]:
    """Attention probabilities (B, heads, P + N, P + N) of blocks 0..last (default all), and the patch grid."""
    check_plain_blocks(vit)
    tokens, grid = embed_tokens(vit, images)
    depth = len(vit.blocks) if last is None else last + 1
    maps = []
    for block in list(vit.blocks)[:depth]:
        tokens, probabilities = block_with_probabilities(block, tokens)
        maps.append(probabilities)
    return maps, grid


def patch_attention(probabilities: torch.Tensor, prefix: int) -> torch.Tensor:
    """(..., P + N, P + N) -> patch-to-patch attention (..., N, N), rows renormalised to sum to 1."""
    patches = probabilities[..., prefix:, prefix:]
    return patches / patches.sum(dim=-1, keepdim=True).clamp(min=1e-12)


def patch_distances(grid: tuple[int, int], patch_size: int) -> torch.Tensor:
    """(N, N) Euclidean distances in pixels between patch centres of a (rows, cols) grid, row-major."""
    rows, cols = torch.meshgrid(torch.arange(grid[0]), torch.arange(grid[1]), indexing="ij")
    centres = torch.stack([rows.flatten(), cols.flatten()], dim=1).double() * patch_size
    return torch.cdist(centres, centres)


def mean_attention_distance(attention: torch.Tensor, grid: tuple[int, int], patch_size: int) -> torch.Tensor:
    """Patch attention (..., N, N) -> mean attention distance in pixels (...), averaged over queries."""
    distances = patch_distances(grid, patch_size).to(attention.device, attention.dtype)
    return (attention * distances).sum(dim=-1).mean(dim=-1)


def attention_nmi(attention: torch.Tensor) -> torch.Tensor:
    """Patch attention (..., N, N), rows summing to 1 -> NMI of query and key positions (...)."""
    count = attention.shape[-1]
    attention = attention.double()
    keys = attention.mean(dim=-2)  # p(k): (..., N)
    ratio = attention / keys.unsqueeze(-2).clamp(min=1e-300)
    information = (attention * torch.log(ratio.clamp(min=1e-300))).sum(dim=(-2, -1)) / count  # I(Q; K)
    key_entropy = -(keys * torch.log(keys.clamp(min=1e-300))).sum(dim=-1)
    return (information / torch.sqrt(math.log(count) * key_entropy).clamp(min=1e-12)).clamp(0, 1)
