"""SLAB: a DeiT-style transformer with simplified linear attention and progressive re-parameterised BatchNorm.

Guo, Chen, Tang, Wang, "SLAB: Efficient Transformers with Simplified Linear Attention and Progressive
Re-parameterized Batch Normalization", arXiv 2405.11582 (ICML 2024).

- Simplified linear attention (SLA): ReLU feature maps on queries and keys, attention computed as
  ReLU(Q) (ReLU(K)^T V) normalised by ReLU(Q) ReLU(K)^T 1 (linear in the number of tokens), plus a depth-wise
  convolution of V over the patch grid that restores the local detail linear attention loses. A learned
  position encoding is added to the keys.
- Progressive re-parameterised BatchNorm (PRepBN): every LayerNorm is lambda LN(x) + (1 - lambda) RepBN(x), with
  RepBN(x) = BN(x) + alpha x; lambda falls linearly from 1 to 0 early in training (the paper's DeiT recipe: over
  60,000 of ~375,000 steps, hence `prepbn_decay=0.16` of training), so the model trains stably with LayerNorm
  and ends with BatchNorm alone. The trainer drives lambda through `set_training_progress`; evaluation mode
  always uses RepBN, the deployed network.
- At inference RepBN is a per-channel affine map, so `reparameterize()` folds it into the next linear layer
  (qkv, fc1): `timm.utils.reparameterize_model(model)` returns a network with no normalisation cost.

Like the paper's SLAB-DeiT, there is no class token: features are the mean of the patch tokens.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, Mlp, PatchEmbed, trunc_normal_
from timm.models import register_model
from timm.models._features import feature_take_indices

from pretrainlab.backbones.model_api import check_divisible, drop_factory_kwargs, drop_path_rates, token_grid
from pretrainlab.backbones.prepbn import ProgressiveNorm, fold_affine_into_linear


class SimplifiedLinearAttention(nn.Module):
    """ReLU-kernel linear attention plus a depth-wise convolution of V (shared by the heads).

    Args:
        grid: the patch grid (h, w); the key position encoding and the convolution live on it.
    """

    def __init__(self, dim: int, num_heads: int, grid: tuple[int, int], qkv_bias: bool = True,
                 kernel_size: int = 5, proj_drop: float = 0.0) -> None:
        super().__init__()
        self.num_heads, self.head_dim, self.grid = num_heads, dim // num_heads, grid
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.positional_encoding = nn.Parameter(torch.zeros(1, grid[0] * grid[1], dim))
        self.dwc = nn.Conv2d(self.head_dim, self.head_dim, kernel_size, padding=kernel_size // 2,
                             groups=self.head_dim)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        q, k, v = self.qkv(x).reshape(batch, tokens, 3, dim).unbind(2)  # (B, N, D) each
        q, k = F.relu(q), F.relu(k + self.positional_encoding)
        q, k, v = (t.reshape(batch, tokens, self.num_heads, self.head_dim).transpose(1, 2) for t in (q, k, v))
        # Sums of products of non-negative features overflow fp16: the paper's code runs this part in fp32.
        with torch.autocast(device_type=x.device.type, enabled=False):
            qf, kf, vf = q.float(), k.float(), v.float()
            normaliser = 1.0 / (qf @ kf.sum(dim=2).unsqueeze(-1) + 1e-6)  # (B, H, N, 1)
            out = (qf @ (kf.transpose(-2, -1) @ vf)) * normaliser  # (B, H, N, d): linear in N
        v_map = v.reshape(batch * self.num_heads, tokens, self.head_dim).transpose(1, 2)
        v_map = v_map.reshape(batch * self.num_heads, self.head_dim, *self.grid)  # (B H, d, h, w)
        local = self.dwc(v_map).reshape(batch, self.num_heads, self.head_dim, tokens).transpose(-2, -1)
        out = (out.to(x.dtype) + local).transpose(1, 2).reshape(batch, tokens, dim)
        return self.proj_drop(self.proj(out))


class SlabBlock(nn.Module):
    """Pre-norm transformer block: x + SLA(PRepBN(x)), then x + MLP(PRepBN(x))."""

    def __init__(self, dim: int, num_heads: int, grid: tuple[int, int], mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, drop: float = 0.0, drop_path: float = 0.0, kernel_size: int = 5) -> None:
        super().__init__()
        self.norm1 = ProgressiveNorm(dim)
        self.attn = SimplifiedLinearAttention(dim, num_heads, grid, qkv_bias, kernel_size, drop)
        self.norm2 = ProgressiveNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def reparameterize(self) -> None:
        """Folds both RepBNs into qkv and fc1 (inference only: the folded block has no training schedule)."""
        if isinstance(self.norm1, ProgressiveNorm):
            fold_affine_into_linear(self.norm1, self.attn.qkv)
            fold_affine_into_linear(self.norm2, self.mlp.fc1)
            self.norm1, self.norm2 = nn.Identity(), nn.Identity()


class SlabTransformer(nn.Module):
    """SLAB-DeiT: patch embedding + position embedding, SLAB blocks, PRepBN, mean of patch tokens, classifier.

    Args:
        prepbn_warmup: fraction of training with LayerNorm alone (lambda = 1; 0 in the paper's DeiT recipe).
        prepbn_decay: fraction of training over which lambda then falls linearly to 0.
        dwc_kernel: side of the depth-wise convolution on V (5 in the paper).
    """

    def __init__(self, img_size: int = 224, patch_size: int = 16, in_chans: int = 3, num_classes: int = 1000,
                 global_pool: str = "avg", embed_dim: int = 192, depth: int = 12, num_heads: int = 3,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 dwc_kernel: int = 5, prepbn_warmup: float = 0.0, prepbn_decay: float = 0.16) -> None:
        super().__init__()
        check_divisible(img_size, patch_size, "patch size")
        if global_pool not in ("avg", ""):
            raise ValueError(f"SLAB pools the mean of its tokens (global_pool 'avg'), got '{global_pool}'")
        if prepbn_warmup < 0 or prepbn_decay < 0 or prepbn_warmup + prepbn_decay > 1:
            raise ValueError("prepbn_warmup and prepbn_decay are fractions of training that add up to at most 1")
        self.prepbn_warmup, self.prepbn_decay = prepbn_warmup, prepbn_decay
        self.num_classes, self.global_pool, self.drop_rate = num_classes, global_pool, drop_rate
        self.num_features = self.head_hidden_size = self.embed_dim = embed_dim
        self.num_prefix_tokens = 0
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        grid = tuple(self.patch_embed.grid_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid[0] * grid[1], embed_dim))
        rates = drop_path_rates(drop_path_rate, depth)
        self.blocks = nn.Sequential(*[SlabBlock(embed_dim, num_heads, grid, mlp_ratio, qkv_bias, drop_rate, rate,
                                                dwc_kernel) for rate in rates])
        self.norm = ProgressiveNorm(embed_dim)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.feature_info = [{"num_chs": embed_dim, "reduction": patch_size, "module": f"blocks.{i}"}
                             for i in range(depth)]
        trunc_normal_(self.pos_embed, std=0.02)
        self.apply(_init_weights)
        self.set_training_progress(1.0)  # until a trainer drives it: the end of the schedule, BatchNorm alone

    def set_training_progress(self, progress: float) -> None:
        """lambda of every PRepBN from the fraction of training done (the trainer's hook)."""
        if progress < self.prepbn_warmup:
            weight = 1.0
        elif self.prepbn_decay > 0:
            weight = max(0.0, 1.0 - (progress - self.prepbn_warmup) / self.prepbn_decay)
        else:
            weight = 0.0
        for module in self.modules():
            if isinstance(module, ProgressiveNorm):
                module.ln_weight = weight

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.head = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.patch_embed(x) + self.pos_embed  # (B, N, D)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> patch tokens (B, N, D)."""
        return self.norm(self.blocks(self.embed(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean(dim=1)  # (B, D)
        if self.drop_rate > 0:
            x = F.dropout(x, self.drop_rate, self.training)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(self, x: torch.Tensor, indices: int | list[int] | None = None, norm: bool = False,
                              stop_early: bool = False, output_fmt: str = "NCHW", intermediates_only: bool = False,
                              **_: Any) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Block outputs as (B, D, h, w) maps (or (B, N, D) with output_fmt NLC)."""
        take, last = feature_take_indices(len(self.blocks), indices)
        grid = tuple(self.patch_embed.grid_size)
        x = self.embed(x)
        intermediates = []
        for index, block in enumerate(self.blocks):
            if (stop_early or intermediates_only) and index > last:
                break
            x = block(x)
            if index in take:
                out = self.norm(x) if norm else x
                intermediates.append(token_grid(out, grid) if output_fmt == "NCHW" else out)
        if intermediates_only:
            return intermediates
        return self.norm(x), intermediates


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def _slab(**kwargs: Any) -> SlabTransformer:
    return SlabTransformer(**drop_factory_kwargs(kwargs))


@register_model
def test_slab(**kwargs: Any) -> SlabTransformer:
    """A few-thousand-parameter SLAB for tests."""
    return _slab(**{"img_size": 32, "patch_size": 4, "embed_dim": 32, "depth": 2, "num_heads": 2,
                    "mlp_ratio": 2.0, **kwargs})


@register_model
def slab_nano_patch4(**kwargs: Any) -> SlabTransformer:
    """The size of vit_nano_patch4, for 32 px images on a CPU."""
    return _slab(**{"img_size": 32, "patch_size": 4, "embed_dim": 128, "depth": 4, "num_heads": 4, **kwargs})


@register_model
def slab_tiny_patch4(**kwargs: Any) -> SlabTransformer:
    """SLAB-DeiT-T's width and depth with 4 px patches for CIFAR-sized images."""
    return _slab(**{"img_size": 32, "patch_size": 4, "embed_dim": 192, "depth": 12, "num_heads": 3, **kwargs})


@register_model
def slab_deit_tiny_patch16_224(**kwargs: Any) -> SlabTransformer:
    """SLAB-DeiT-T, the paper's smallest model."""
    return _slab(**{"img_size": 224, "patch_size": 16, "embed_dim": 192, "depth": 12, "num_heads": 3, **kwargs})
