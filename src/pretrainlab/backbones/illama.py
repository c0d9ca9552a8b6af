"""iLLaMA: a LLaMA decoder as a vision transformer.

Wang, Zhao, Wang, Jiang, Cheng, Tang, "Adapting LLaMA Decoder to Vision Transformer", arXiv 2404.06773.

LLaMA's block, unchanged, on patch tokens: RMSNorm before attention and MLP, a SwiGLU MLP (hidden width
2/3 of 4 D rounded up to a multiple of 256, no biases), rotary position embedding (RoPE) on queries and keys
over the 1-D token order, plus a learned absolute position embedding. Attention is causal, which would hide the
image from a class token in front, so the class token is appended after the image tokens ("post-sequence class
token"): it is the one token that attends to every patch, and its output is the image representation.

Soft mask: causal attention from the start of training trains poorly, so the paper starts bidirectional and
switches to causal: M = r M_bidirectional + (1 - r) M_causal, with r = 1 for the first `soft_mask_end` of
training (`soft_mask_schedule="constant"`, the paper's iLLaMA-T recipe: 50 of 300 epochs) or falling linearly
to 0 over it ("linear"). The trainer drives r through `set_training_progress`; evaluation is always causal.
The official code multiplies the softmax weights by M, so a token's softmax normaliser still sums over later
tokens and the "causal" model is not strictly causal; here M enters the softmax as log M (the weights are
renormalised over the allowed keys), which is the same at r = 1 and exactly causal at r = 0 (a test checks it).

For `Backbone.tokens` the class token is moved to the front of the output, (B, 1 + N, D), as every timm ViT has it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, PatchEmbed, RmsNorm, SwiGLU, trunc_normal_
from timm.models import register_model
from timm.models._features import feature_take_indices

from pretrainlab.backbones.model_api import check_divisible, drop_factory_kwargs, drop_path_rates, token_grid

SCHEDULES = ("constant", "linear")


def rotary_tables(length: int, head_dim: int, theta: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin (length, head_dim / 2) of LLaMA's rotary embedding for positions 0..length-1."""
    frequencies = 1.0 / theta ** (torch.arange(0, head_dim, 2).float() / head_dim)  # (d/2,)
    angles = torch.outer(torch.arange(length).float(), frequencies)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotates each (even, odd) feature pair of x (B, H, N, d) by its position's angle (LLaMA's layout)."""
    pairs = x.float().reshape(*x.shape[:-1], -1, 2)  # (B, H, N, d/2, 2)
    even, odd = pairs.unbind(-1)
    rotated = torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1)
    return rotated.flatten(-2).type_as(x)


class CausalSelfAttention(nn.Module):
    """Multi-head attention with RoPE under a (soft) causal mask."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                log_mask: torch.Tensor | None) -> torch.Tensor:
        """x (B, N, D); log_mask (N, N) added to the attention logits, None: strictly causal."""
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B, H, N, d)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=log_mask, is_causal=log_mask is None)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class LlamaBlock(nn.Module):
    """x + Attention(RMSNorm(x)), then x + SwiGLU(RMSNorm(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_hidden: int, qkv_bias: bool = True,
                 drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = RmsNorm(dim, eps=1e-6)
        self.attn = CausalSelfAttention(dim, num_heads, qkv_bias)
        self.norm2 = RmsNorm(dim, eps=1e-6)
        self.mlp = SwiGLU(dim, mlp_hidden, bias=False)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                log_mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), cos, sin, log_mask))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class ILlama(nn.Module):
    """iLLaMA: patch embedding, image tokens then the class token, LLaMA blocks, RMSNorm, classifier.

    Args:
        mlp_multiple_of: the SwiGLU hidden width is rounded up to a multiple of this (256 in the paper).
        soft_mask_end: fraction of training with the soft mask (0: causal from the first step).
        soft_mask_schedule: "constant" (bidirectional, then causal) or "linear" (a linear blend).
        global_pool: "token" (the class token, the paper's) or "avg" (mean of the patch tokens).
    """

    def __init__(self, img_size: int = 224, patch_size: int = 16, in_chans: int = 3, num_classes: int = 1000,
                 global_pool: str = "token", embed_dim: int = 192, depth: int = 12, num_heads: int = 3,
                 mlp_ratio: float = 4.0, mlp_multiple_of: int = 256, qkv_bias: bool = True, drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, soft_mask_end: float = 50 / 300,
                 soft_mask_schedule: str = "constant") -> None:
        super().__init__()
        check_divisible(img_size, patch_size, "patch size")
        if soft_mask_schedule not in SCHEDULES or not 0 <= soft_mask_end <= 1:
            raise ValueError(f"soft_mask_schedule must be one of {SCHEDULES} and soft_mask_end in [0, 1]")
        if global_pool not in ("token", "avg"):
            raise ValueError(f"global_pool must be 'token' or 'avg', got '{global_pool}'")
        self.soft_mask_end, self.soft_mask_schedule = soft_mask_end, soft_mask_schedule
        self.num_classes, self.global_pool, self.drop_rate = num_classes, global_pool, drop_rate
        self.num_features = self.head_hidden_size = self.embed_dim = embed_dim
        self.num_prefix_tokens = 1  # in the output of forward_features (moved to the front)
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        tokens = self.patch_embed.num_patches + 1
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens, embed_dim))
        hidden = int(2 * mlp_ratio * embed_dim / 3)
        hidden = mlp_multiple_of * -(-hidden // mlp_multiple_of)
        rates = drop_path_rates(drop_path_rate, depth)
        self.blocks = nn.ModuleList(LlamaBlock(embed_dim, num_heads, hidden, qkv_bias, rate) for rate in rates)
        self.norm = RmsNorm(embed_dim, eps=1e-6)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        cos, sin = rotary_tables(tokens, embed_dim // num_heads)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.register_buffer("causal", torch.ones(tokens, tokens).tril(), persistent=False)
        self.feature_info = [{"num_chs": embed_dim, "reduction": patch_size, "module": f"blocks.{i}"}
                             for i in range(depth)]
        trunc_normal_(self.pos_embed, std=0.02)
        trunc_normal_(self.cls_token, std=0.02)
        self.apply(_init_weights)
        self.bidirectional_share = 0.0  # r: until a trainer drives it, causal (the end of the schedule)

    def set_training_progress(self, progress: float) -> None:
        """r of the soft mask from the fraction of training done (the trainer's hook)."""
        if progress >= self.soft_mask_end:
            self.bidirectional_share = 0.0
        elif self.soft_mask_schedule == "constant":
            self.bidirectional_share = 1.0
        else:
            self.bidirectional_share = 1.0 - progress / self.soft_mask_end

    def log_attention_mask(self, dtype: torch.dtype) -> torch.Tensor | None:
        """log M (N + 1, N + 1) of the soft mask in training; None (strictly causal) in eval or at r = 0."""
        share = self.bidirectional_share if self.training else 0.0
        if share == 0:
            return None
        return torch.log(share + (1.0 - share) * self.causal).to(dtype)

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.global_pool = global_pool or self.global_pool
        self.head = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()

    def run_blocks(self, x: torch.Tensor, stop_after: int | None = None) -> list[torch.Tensor]:
        """Images (B, C, H, W) -> the token sequence (B, N + 1, D), class token last, after each block."""
        x = torch.cat([self.patch_embed(x), self.cls_token.expand(x.shape[0], -1, -1)], dim=1) + self.pos_embed
        log_mask = self.log_attention_mask(x.dtype)
        outputs = []
        for block in self.blocks[: None if stop_after is None else stop_after + 1]:
            x = block(x, self.rope_cos, self.rope_sin, log_mask)
            outputs.append(x)
        return outputs

    @staticmethod
    def class_first(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x[:, -1:], x[:, :-1]], dim=1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, 1 + N, D), the class token first."""
        return self.class_first(self.norm(self.run_blocks(x)[-1]))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x[:, 0] if self.global_pool == "token" else x[:, 1:].mean(dim=1)  # (B, D)
        if self.drop_rate > 0:
            x = F.dropout(x, self.drop_rate, self.training)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(self, x: torch.Tensor, indices: int | list[int] | None = None, norm: bool = False,
                              stop_early: bool = False, output_fmt: str = "NCHW", intermediates_only: bool = False,
                              **_: Any) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Patch tokens after the selected blocks as (B, D, h, w) maps (or (B, N, D) with output_fmt NLC)."""
        take, last = feature_take_indices(len(self.blocks), indices)
        outputs = self.run_blocks(x, last if (stop_early or intermediates_only) else None)
        grid = tuple(self.patch_embed.grid_size)
        intermediates = []
        for index in take:
            patches = (self.norm(outputs[index]) if norm else outputs[index])[:, :-1]  # without the class token
            intermediates.append(token_grid(patches, grid) if output_fmt == "NCHW" else patches)
        if intermediates_only:
            return intermediates
        return self.class_first(self.norm(outputs[-1])), intermediates


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def _illama(**kwargs: Any) -> ILlama:
    return ILlama(**drop_factory_kwargs(kwargs))


@register_model
def test_illama(**kwargs: Any) -> ILlama:
    """A few-thousand-parameter iLLaMA for tests."""
    return _illama(**{"img_size": 32, "patch_size": 4, "embed_dim": 32, "depth": 2, "num_heads": 2,
                      "mlp_multiple_of": 16, **kwargs})


@register_model
def illama_nano_patch4(**kwargs: Any) -> ILlama:
    """The size of vit_nano_patch4, for 32 px images on a CPU."""
    return _illama(**{"img_size": 32, "patch_size": 4, "embed_dim": 128, "depth": 4, "num_heads": 4,
                      "mlp_multiple_of": 32, **kwargs})


@register_model
def illama_tiny_patch4(**kwargs: Any) -> ILlama:
    """iLLaMA-T's width and depth with 4 px patches for CIFAR-sized images."""
    return _illama(**{"img_size": 32, "patch_size": 4, "embed_dim": 192, "depth": 12, "num_heads": 3, **kwargs})


@register_model
def illama_tiny_patch16_224(**kwargs: Any) -> ILlama:
    """iLLaMA-T (5.7 M parameters), the paper's smallest model."""
    return _illama(**{"img_size": 224, "patch_size": 16, "embed_dim": 192, "depth": 12, "num_heads": 3, **kwargs})
