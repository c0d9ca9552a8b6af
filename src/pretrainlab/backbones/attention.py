"""timm transformer blocks run with their attention probabilities exposed (and an optional additive bias).

timm's fused attention never materialises the attention matrix. Methods that need it (masked token
optimisation reads how much attention falls on mask tokens) recompute a block here from its public
submodules, step for step as `timm.models.vision_transformer.Block` and `Attention` do, without
modifying the block. Tests compare the output with the block's own forward.
"""

from __future__ import annotations

import torch
import torch.nn as nn


def attention_with_probabilities(attention: nn.Module, x: torch.Tensor,
                                 bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A timm `Attention` on x (B, L, D) -> (output (B, L, D), probabilities (B, H, L, L)).

    Args:
        bias: optional additive logits bias broadcastable to (B, H, L, L); -inf removes a key for a query.
    """
    batch, length, _ = x.shape
    heads = attention.num_heads
    head_dim = attention.head_dim
    gate = attention.gate(x).sigmoid() if getattr(attention, "gate", None) is not None else None
    qkv = attention.qkv(x).reshape(batch, length, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
    query, key, value = qkv.unbind(0)  # (B, H, L, d) each
    query, key = attention.q_norm(query), attention.k_norm(key)
    logits = (query * attention.scale) @ key.transpose(-2, -1)  # (B, H, L, L)
    if bias is not None:
        logits = logits + bias
    probabilities = logits.softmax(dim=-1)
    out = (attention.attn_drop(probabilities) @ value).transpose(1, 2).reshape(batch, length, -1)
    out = attention.norm(out) if hasattr(attention, "norm") else out
    if gate is not None:
        out = out * gate
    return attention.proj_drop(attention.proj(out)), probabilities


def block_with_probabilities(block: nn.Module, x: torch.Tensor,
                             bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A timm `Block` (pre-norm attention and MLP, layer scale, drop path) on x (B, L, D) -> (x, probabilities)."""
    attended, probabilities = attention_with_probabilities(block.attn, block.norm1(x), bias)
    x = x + block.drop_path1(block.ls1(attended))
    x = x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))
    return x, probabilities
