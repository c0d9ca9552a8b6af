"""Running parts of a timm VisionTransformer on a subset of its patches (masked image modelling).

These read the public attributes of timm's VisionTransformer (patch_embed, pos_embed, cls_token,
reg_token, blocks, norm) and never modify the model.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from timm.layers import resample_abs_pos_embed

from pretrainlab.backbones.adapter import Backbone
from pretrainlab.errors import PretrainlabError

VIT_PARTS = ("patch_embed", "pos_embed", "no_embed_class", "norm_pre", "pos_drop", "blocks", "norm")


def runs_token_by_token(backbone: Backbone) -> bool:
    """True when the model has the timm VisionTransformer parts these helpers run (ConViT, SLAB, iLLaMA do not)."""
    return backbone.has_tokens and all(hasattr(backbone.model, part) for part in VIT_PARTS)


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


def encode_tokens(vit: nn.Module, patch_tokens: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Runs prefix + given patch tokens (B, K, D) through the blocks and final norm: (B, P + K, D).

    Args:
        attn_mask: optional bool (B, 1, P + K, P + K), True where a query may attend to a key, given to
            every block (timm's `Block(x, attn_mask=...)`); position prediction (MP3) hides keys with it.
    """
    tokens = torch.cat([prefix_tokens(vit, patch_tokens.shape[0]), patch_tokens], dim=1)
    tokens = vit.norm_pre(vit.pos_drop(tokens))
    for block in vit.blocks:
        tokens = block(tokens) if attn_mask is None else block(tokens, attn_mask=attn_mask)
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


def patch_embed_any_size(vit: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    """(B, C, H, W) of any size -> patch tokens without position (B, h * w, D) and the grid (h, w).

    Calls the patch projection and norm directly: timm's PatchEmbed checks that inputs have the size
    it was built for, which multi-crop methods' smaller local views do not.
    """
    embed = vit.patch_embed
    tokens = embed.proj(x)  # (B, D, h, w)
    grid = (int(tokens.shape[-2]), int(tokens.shape[-1]))
    return embed.norm(tokens.flatten(2).transpose(1, 2)), grid


def add_patch_positions(vit: nn.Module, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Adds the patch position embedding, bicubically resampled when `grid` differs from the model's: (B, N, D)."""
    if vit.pos_embed is None:
        return tokens
    position = vit.pos_embed if vit.no_embed_class else vit.pos_embed[:, vit.num_prefix_tokens :]
    native = tuple(vit.patch_embed.grid_size)
    if tuple(grid) != native:
        position = resample_abs_pos_embed(position, new_size=list(grid), old_size=list(native), num_prefix_tokens=0)
    return tokens + position


def replace_masked_tokens(tokens: torch.Tensor, mask: torch.Tensor, mask_token: torch.Tensor) -> torch.Tensor:
    """tokens (B, N, D), mask (B, N) bool, mask_token (D,) or (1, 1, D) -> masked patches replaced: (B, N, D).

    BEiT / iBOT replace a hidden patch's embedding before its position is added, so the network
    knows where the missing patch is but not what it shows.
    """
    return torch.where(mask.unsqueeze(-1), mask_token.reshape(1, 1, -1).to(tokens.dtype), tokens)


def embed_tokens(vit: nn.Module, images: torch.Tensor, mask: torch.Tensor | None = None,
                 mask_token: torch.Tensor | None = None) -> tuple[torch.Tensor, tuple[int, int]]:
    """Images (B, C, H, W), any multiple of the patch size -> tokens entering the first block (B, P + N, D), grid.

    Args:
        mask: optional (B, N) bool; True patches are replaced by `mask_token` (D,) before positions are added.
    """
    patches, grid = patch_embed_any_size(vit, images)
    if mask is not None:
        if mask_token is None:
            raise ValueError("a mask needs a mask_token")
        patches = replace_masked_tokens(patches, mask, mask_token)
    tokens = torch.cat([prefix_tokens(vit, len(images)), add_patch_positions(vit, patches, grid)], dim=1)
    return vit.norm_pre(vit.pos_drop(tokens)), grid


def encode_any_size(vit: nn.Module, images: torch.Tensor, mask: torch.Tensor | None = None,
                    mask_token: torch.Tensor | None = None) -> torch.Tensor:
    """All tokens (B, P + N, D) after the final norm, for images of any size (a multiple of the patch size).

    Args:
        images: (B, C, H, W).
        mask: optional (B, N) bool; True patches are replaced by `mask_token` (D,).
    """
    tokens, _ = embed_tokens(vit, images, mask, mask_token)  # (B, P + N, D)
    for block in vit.blocks:
        tokens = block(tokens)
    return vit.norm(tokens)


def pooled_any_size(backbone: Backbone, images: torch.Tensor) -> torch.Tensor:
    """`backbone.pooled` for images (B, C, H, W) of a size other than the ViT was built for: (B, D).

    CNNs, ViTs at their own size and ViTs created with timm's `dynamic_img_size=True` take the
    ordinary path; other ViTs interpolate their position embedding here, which leaves the exported
    model unchanged (multi-crop methods use this for their small local views).
    """
    model = backbone.model
    native_size = tuple(getattr(getattr(model, "patch_embed", None), "img_size", None) or ())
    if not backbone.has_tokens or tuple(images.shape[-2:]) == native_size or getattr(model, "dynamic_img_size", False):
        return backbone.pooled(images)
    if not hasattr(model, "pos_embed") or not hasattr(model.patch_embed, "proj"):
        raise PretrainlabError(
            f"backbone '{backbone.name}' cannot run on {tuple(images.shape[-2:])} px views (not a plain "
            "VisionTransformer); use views of the training size or a timm ViT / CNN"
        )
    return model.forward_head(encode_any_size(model, images), pre_logits=True)
