"""Selfie's attention pooling network and its row + column position embeddings.

Trinh, Luong, Le, "Selfie: Self-supervised Pretraining for Image Embedding", arXiv 1906.02940, section 2.2:
a learned query vector u0 is prepended to the patch vectors, transformer layers mix them, and u0's output
is the pooled summary u. Positions are the sum of a row and a column embedding (7 + 7 vectors instead of
49 for a 7x7 grid).
"""

from __future__ import annotations

import torch
import torch.nn as nn
from timm.models.vision_transformer import Block


class RowColumnEmbedding(nn.Module):
    """Learned position embeddings of a square patch grid: embedding(r, c) = row[r] + column[c].

    Args:
        grid: patches per side.
        dim: embedding size.
    """

    def __init__(self, grid: int, dim: int) -> None:
        super().__init__()
        self.grid = grid
        self.row = nn.Parameter(torch.randn(grid, dim) * 0.02)
        self.column = nn.Parameter(torch.randn(grid, dim) * 0.02)

    def forward(self, index: torch.Tensor) -> torch.Tensor:
        """index (...) of row-major patch positions -> (..., dim)."""
        return self.row[index // self.grid] + self.column[index % self.grid]


class AttentionPooling(nn.Module):
    """u, h_1', ..., h_n' = TransformerLayers(u0, h_1, ..., h_n); returns u.

    Args:
        dim: width of the patch vectors.
        depth: transformer layers.
        num_heads: attention heads (must divide dim).
    """

    def __init__(self, dim: int, depth: int, num_heads: int) -> None:
        super().__init__()
        if depth < 1 or dim % num_heads:
            raise ValueError(f"attention pooling needs depth >= 1 and heads dividing dim, got depth {depth}, "
                             f"{num_heads} heads, dim {dim}")
        self.query = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.blocks = nn.ModuleList(Block(dim, num_heads, mlp_ratio=4.0, qkv_bias=True) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """patches (B, K, dim), position embeddings already added -> u (B, dim)."""
        tokens = torch.cat([self.query.expand(len(patches), -1, -1), patches], dim=1)  # (B, 1 + K, dim)
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens[:, 0])
