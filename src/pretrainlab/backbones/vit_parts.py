"""Running parts of a timm VisionTransformer on a subset of its patches (masked image modelling).

These read the public attributes of timm's VisionTransformer (patch_embed, pos_embed, cls_token,
reg_token, blocks, norm) and never modify the model.
"""

from __future__ import annotations

import torch
import torch.nn as nn


def patch_embed_with_pos(vit: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> patch tokens with their position embedding added: (B, N, D)."""
    tokens = vit.patch_embed(x)  # (B, N, D)
    if tokens.ndim == 4:  # models that keep NHWC output
        tokens = tokens.flatten(1, 2)
    if vit.pos_embed is None:
        return tokens
    position = vit.pos_embed if vit.no_embed_class else vit.pos_embed[:, vit.num_prefix_tokens :]
    return tokens + position


def prefix_tokens(vit: nn.Module, batch: int) -> torch.Tensor:
    """Class and register tokens for `batch` images, with their position embedding: (B, P, D)."""
    parts = []
    if getattr(vit, "cls_token", None) is not None:
        parts.append(vit.cls_token.expand(batch, -1, -1))
    if getattr(vit, "reg_token", None) is not None:
        parts.append(vit.reg_token.expand(batch, -1, -1))
    if not parts:
        return vit.patch_embed.proj.weight.new_zeros(batch, 0, vit.embed_dim)
    prefix = torch.cat(parts, dim=1)
    if vit.pos_embed is not None and not vit.no_embed_class:
        prefix = prefix + vit.pos_embed[:, : prefix.shape[1]]
    return prefix


def gather_tokens(tokens: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """tokens (B, N, D), indices (B, K) -> (B, K, D)."""
    return torch.gather(tokens, 1, indices.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))


def encode_tokens(vit: nn.Module, patch_tokens: torch.Tensor) -> torch.Tensor:
    """Runs prefix + given patch tokens (B, K, D) through the blocks and final norm: (B, P + K, D)."""
    tokens = torch.cat([prefix_tokens(vit, patch_tokens.shape[0]), patch_tokens], dim=1)
    tokens = vit.norm_pre(vit.pos_drop(tokens))
    for block in vit.blocks:
        tokens = block(tokens)
    return vit.norm(tokens)


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, N, p * p * C), patches in row-major order, pixels (p, p, C) inside each."""
    batch, channels, height, width = images.shape
    rows, cols = height // patch_size, width // patch_size
    x = images.reshape(batch, channels, rows, patch_size, cols, patch_size)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(batch, rows * cols, patch_size * patch_size * channels)


def unpatchify(patches: torch.Tensor, patch_size: int, channels: int, grid: tuple[int, int]) -> torch.Tensor:
    """Inverse of `patchify`: (B, N, p * p * C) -> (B, C, H, W)."""
    rows, cols = grid
    x = patches.reshape(patches.shape[0], rows, cols, patch_size, patch_size, channels)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(patches.shape[0], channels, rows * patch_size, cols * patch_size)
