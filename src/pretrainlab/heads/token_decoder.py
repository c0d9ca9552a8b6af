"""A light transformer decoder that fills mask tokens in and predicts per-patch targets (MAE-style)."""

from __future__ import annotations

import torch
import torch.nn as nn
from timm.models.vision_transformer import Block

from pretrainlab.heads.pos_embed import sincos_2d


class TokenDecoder(nn.Module):
    """Takes the encoder's visible tokens, inserts a learned mask token at hidden positions, predicts targets.

    Args:
        in_dim: encoder width.
        grid: patch grid (rows, cols).
        dim, depth, num_heads: decoder width, blocks and heads (MAE: 512, 8, 16; small data: much less).
        out_dim: prediction size per patch (p * p * C for pixels).
    """

    def __init__(self, in_dim: int, grid: tuple[int, int], dim: int, depth: int, num_heads: int,
                 out_dim: int) -> None:
        super().__init__()
        self.embed = nn.Linear(in_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.register_buffer("pos_embed", sincos_2d(dim, grid)[None], persistent=False)  # (1, N, dim)
        self.blocks = nn.ModuleList(Block(dim, num_heads, mlp_ratio=4.0, qkv_bias=True) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.predict = nn.Linear(dim, out_dim)
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, visible: torch.Tensor, visible_index: torch.Tensor, num_patches: int) -> torch.Tensor:
        """visible (B, K, in_dim) patch tokens at positions visible_index (B, K) -> (B, N, out_dim)."""
        tokens = self.fill(visible, visible_index, num_patches)
        for block in self.blocks:
            tokens = block(tokens)
        return self.head(tokens)

    def fill(self, visible: torch.Tensor, visible_index: torch.Tensor, num_patches: int) -> torch.Tensor:
        """The blocks' input: embedded visible tokens, the mask token elsewhere, positions added: (B, N, dim).

        `fill`, the blocks and `head` are separate so a method can run the blocks its own way (e.g. masked
        token optimisation, methods/mto.py).
        """
        batch = visible.shape[0]
        tokens = self.mask_token.expand(batch, num_patches, -1).clone()  # (B, N, dim)
        embedded = self.embed(visible)
        tokens = tokens.scatter(1, visible_index.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]), embedded)
        return tokens + self.pos_embed

    def head(self, tokens: torch.Tensor) -> torch.Tensor:
        """The blocks' output (B, N, dim) -> predictions (B, N, out_dim)."""
        return self.predict(self.norm(tokens))
