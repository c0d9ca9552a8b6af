"""A decoder whose tokens attend to themselves and, by cross-attention, to a second token set.

CroCo's decoder completes a masked view while attending to the other view's encoding; MultiMAE's
per-modality decoders complete one modality while attending to the encoding of all visible tokens.
Both are this module: fill mask tokens into a grid of queries, then blocks of self-attention,
cross-attention to the context and an MLP (pre-norm), and a linear prediction per token.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import Mlp
from timm.models.vision_transformer import Attention

from pretrainlab.heads.pos_embed import sincos_2d


def scatter_to_grid(values: torch.Tensor, index: torch.Tensor, length: int) -> torch.Tensor:
    """values (B, K, D) at positions index (B, K) -> (B, length, D), zeros elsewhere."""
    grid = values.new_zeros(values.shape[0], length, values.shape[-1])
    return grid.scatter(1, index.unsqueeze(-1).expand(-1, -1, values.shape[-1]), values)


class CrossAttention(nn.Module):
    """Multi-head attention of queries (B, N, D) to a context (B, M, D)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} must be divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.query = nn.Linear(dim, dim)
        self.key_value = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        batch, length, dim = x.shape
        head_dim = dim // self.num_heads
        query = self.query(x).reshape(batch, length, self.num_heads, head_dim).transpose(1, 2)  # (B, H, N, d)
        key, value = self.key_value(context).reshape(batch, -1, 2, self.num_heads, head_dim).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(query, key, value)  # (B, H, N, d)
        return self.proj(out.transpose(1, 2).reshape(batch, length, dim))


class CrossBlock(nn.Module):
    """Self-attention, cross-attention to the context, MLP; each pre-normalised with a residual."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm_self = nn.LayerNorm(dim)
        self.self_attention = Attention(dim, num_heads, qkv_bias=True)
        self.norm_query = nn.LayerNorm(dim)
        self.norm_context = nn.LayerNorm(dim)
        self.cross_attention = CrossAttention(dim, num_heads)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attention(self.norm_self(x))
        x = x + self.cross_attention(self.norm_query(x), self.norm_context(context))
        return x + self.mlp(self.norm_mlp(x))


class CrossViewDecoder(nn.Module):
    """Completes a grid of tokens with cross-attention to context tokens.

    Args:
        in_dim: width of the encoder tokens given as queries.
        grid: patch grid (rows, cols) of the queries.
        dim, depth, num_heads: decoder width, blocks and heads.
        out_dim: prediction size per token (p * p * C pixels, or p * p * K class logits).
        context_dim: width of the context tokens (in_dim when 0).
    """

    def __init__(self, in_dim: int, grid: tuple[int, int], dim: int, depth: int, num_heads: int, out_dim: int,
                 context_dim: int = 0) -> None:
        super().__init__()
        self.embed = nn.Linear(in_dim, dim)
        self.context_embed = nn.Linear(context_dim or in_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.register_buffer("pos_embed", sincos_2d(dim, grid)[None], persistent=False)  # (1, N, dim)
        self.blocks = nn.ModuleList(CrossBlock(dim, num_heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.predict = nn.Linear(dim, out_dim)
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, tokens: torch.Tensor, visible: torch.Tensor, context: torch.Tensor,
                context_on_grid: bool = False) -> torch.Tensor:
        """Predictions (B, N, out_dim) for every grid position.

        Args:
            tokens: (B, N, in_dim) encoder tokens on the grid; only `visible` positions are read.
            visible: (B, N) bool, True where `tokens` holds an encoded patch; the rest become mask tokens.
            context: (B, M, context_dim) tokens to attend to.
            context_on_grid: the context is one token per grid position (M = N) and gets the grid's positions.
        """
        queries = torch.where(visible.unsqueeze(-1), self.embed(tokens), self.mask_token.to(tokens.dtype))
        queries = queries + self.pos_embed  # (B, N, dim)
        context = self.context_embed(context)
        if context_on_grid:
            context = context + self.pos_embed
        for block in self.blocks:
            queries = block(queries, context)
        return self.predict(self.norm(queries))
