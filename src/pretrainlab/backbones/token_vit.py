"""Token-input ViTs: the backbones of storage-efficient training on code grids (`--data tokens:PATH`).

Park, Yun, Heo, Han, Shim et al., "SeiT: Storage-Efficient Vision Training with Tokens Using 1% of Pixel
Storage", arXiv 2303.11114, and Lee, Park, Heo, Han, Shim, "SeiT++: Masked Token Modeling Improves
Storage-efficient Training", arXiv 2312.10105: a ViT whose input is a grid of VQ codes. The patch embedding
here is an embedding table of the K codes (one token per grid cell, "patch size" 1), so the rest is timm's
VisionTransformer unchanged and every timm tool works on it.

Input convention: (B, C, h, w) floats holding the code bytes (the `tokens:` source's normalisation, mean 0 and
std 1/255, turns its uint8 code images back into the bytes): C = 1 is the code itself, C = 3 is (high byte, low
byte, 0) for codebooks above 256. Anything that is not whole numbers in range (normalised pixels) is refused.
`codebook_size` and `tokenizer` (the token file's tokenizer id, filled in when pre-training on a token file) are
constructor options saved with the export, so a token file of another tokenizer is refused in one line.
"""

from __future__ import annotations

from typing import Any

import timm
import torch
import torch.nn as nn
from timm.models import register_model
from timm.models.vision_transformer import VisionTransformer

from pretrainlab.backbones.model_api import drop_factory_kwargs
from pretrainlab.data.tokens.token_file import codes_from_bytes
from pretrainlab.errors import PretrainlabError


class CodeEmbed(nn.Module):
    """The patch embedding of a token ViT: code bytes (B, C, h, w) -> one learned vector per code (B, h * w, D).

    Takes the keyword arguments timm's VisionTransformer passes to its `embed_layer`.
    """

    def __init__(self, img_size: int = 8, patch_size: int = 1, in_chans: int = 1, embed_dim: int = 128,
                 codebook_size: int = 256, **_: Any) -> None:
        super().__init__()
        if patch_size != 1:
            raise ValueError(f"a token ViT embeds one code per token: patch_size must be 1, got {patch_size}")
        self.codebook_size = codebook_size
        self.img_size = (img_size, img_size)
        self.patch_size = (1, 1)
        self.grid_size = self.img_size
        self.num_patches = img_size * img_size
        self.flatten = True
        self.embedding = nn.Embedding(codebook_size, embed_dim)
        nn.init.normal_(self.embedding.weight, std=0.02)

    def feat_ratio(self, as_scalar: bool = True) -> int | tuple[int, int]:
        return 1 if as_scalar else (1, 1)

    def dynamic_feat_size(self, img_size: tuple[int, int]) -> tuple[int, int]:
        return img_size

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """Code bytes (B, C, h, w) -> codes (B, h, w) int64, checked to be whole numbers of the codebook."""
        if x.is_floating_point() and (x - x.round()).abs().max() > 1e-3:
            raise ValueError(f"token backbone takes code grids (--data tokens:PATH), not pixels: its input holds "
                             f"non-integer values (max {float(x.abs().max()):.3g})")
        codes = codes_from_bytes(x)
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.codebook_size):
            raise ValueError(f"code {int(codes.max())} is outside this backbone's {self.codebook_size} codes")
        return codes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embedding(self.codes(x)).flatten(1, 2)  # (B, h * w, D)


class TokenVisionTransformer(VisionTransformer):
    """timm's VisionTransformer with `CodeEmbed` as its patch embedding; `embed_codes` skips the byte decoding."""

    def __init__(self, codebook_size: int = 256, tokenizer: str = "", **kwargs: Any) -> None:
        self.codebook_size = codebook_size
        self.tokenizer = tokenizer  # the token file's tokenizer id this model was trained on ("" = none yet)
        kwargs.setdefault("img_size", 8)
        kwargs.setdefault("global_pool", "avg")
        super().__init__(patch_size=1, embed_layer=_code_embed(codebook_size), **kwargs)


def _code_embed(codebook_size: int) -> type[CodeEmbed]:
    """A CodeEmbed class bound to `codebook_size` (timm builds the embed layer from a class and fixed kwargs)."""

    class BoundCodeEmbed(CodeEmbed):
        def __init__(self, **kwargs: Any) -> None:
            kwargs.pop("bias", None)
            kwargs.pop("dynamic_img_pad", None)
            super().__init__(codebook_size=codebook_size, **kwargs)

    return BoundCodeEmbed


def _token_vit(embed_dim: int, depth: int, num_heads: int, **kwargs: Any) -> TokenVisionTransformer:
    return TokenVisionTransformer(embed_dim=embed_dim, depth=depth, num_heads=num_heads,
                                  **drop_factory_kwargs(kwargs))


@register_model
def test_vit_token(**kwargs: Any) -> TokenVisionTransformer:
    return _token_vit(embed_dim=32, depth=2, num_heads=2, **kwargs)


@register_model
def vit_token_nano(**kwargs: Any) -> TokenVisionTransformer:
    """vit_nano_patch4's encoder (128 wide, 4 blocks) on code grids: the same sequence length for 28-32 px data
    tokenized with downsample 2 as vit_nano_patch4 on the pixels (7x7 or 8x8 tokens)."""
    return _token_vit(embed_dim=128, depth=4, num_heads=4, **kwargs)


@register_model
def vit_token_tiny(**kwargs: Any) -> TokenVisionTransformer:
    return _token_vit(embed_dim=192, depth=12, num_heads=3, **kwargs)


TOKEN_BACKBONES = ("test_vit_token", "vit_token_nano", "vit_token_tiny")


def is_token_model(model: nn.Module) -> bool:
    return isinstance(model, TokenVisionTransformer)


def token_backbone_options(name: str, options: dict[str, Any], tokenizer: Any) -> dict[str, Any]:
    """Backbone options for pre-training on a token file: its codebook size and tokenizer id, unless given."""
    if tokenizer is None or not timm.is_model(name) or not name.startswith(TOKEN_PREFIXES):
        return dict(options)
    filled = {"codebook_size": tokenizer.codebook_size, "tokenizer": tokenizer.id}
    filled.update(options)
    return filled


TOKEN_PREFIXES = ("vit_token_", "test_vit_token")


def check_token_pairing(model: nn.Module, name: str, tokenizer: Any, spec: str) -> None:
    """Code grids go to token backbones of the same tokenizer, pixels to the others; else a one-line error."""
    token_model = is_token_model(model)
    if tokenizer is None:
        if token_model:
            raise PretrainlabError(f"backbone '{name}' takes code grids; give it a token file (--data tokens:PATH, "
                                   f"written by pretrainlab tokenize), not '{spec}'")
        return
    if not token_model:
        raise PretrainlabError(f"'{spec}' holds code grids, which backbone '{name}' cannot take; use a token "
                               f"backbone: {', '.join(TOKEN_BACKBONES)}")
    grid = tuple(tokenizer.meta["grid"])
    if model.codebook_size != tokenizer.codebook_size or tuple(model.patch_embed.grid_size) != grid:
        raise PretrainlabError(
            f"token file '{spec}' comes from another tokenizer: {tokenizer.codebook_size} codes on a "
            f"{grid[0]}x{grid[1]} grid, but backbone '{name}' embeds {model.codebook_size} codes on a "
            f"{model.patch_embed.grid_size[0]}x{model.patch_embed.grid_size[1]} grid; tokenize with the backbone's "
            f"tokenizer, or pre-train a backbone on this file")
    if model.tokenizer and model.tokenizer != tokenizer.id:
        raise PretrainlabError(f"token file '{spec}' comes from another tokenizer (id {tokenizer.id}) than the one "
                               f"backbone '{name}' was trained on (id {model.tokenizer}): its codes mean other "
                               "vectors; evaluate on a file written by the same tokenizer")
