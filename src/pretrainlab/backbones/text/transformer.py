"""A small text transformer trained from scratch: CLIP's text tower and the caption language model.

Radford et al., "Learning Transferable Visual Models From Natural Language Supervision", arXiv 2103.00020,
section 2.4: a causally masked transformer over token ids with learned positions, whose features at the
end-of-text token, after a final layer norm, represent the caption. The same network with a tied output
layer is a causal language model (language_model.py), as in GPT-2 (the paper's text model follows it).

Pre-norm blocks (LayerNorm before attention and MLP), GELU, no dropout (small data, short runs).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from pretrainlab.backbones.text.tokenizer import EOS, PAD, Tokenizer
from pretrainlab.errors import PretrainlabError


class TextTransformer(nn.Module):
    """Token ids (B, L) -> features (B, L, width); position i attends to positions <= i when `causal`.

    Args:
        vocab_size: number of token ids.
        width, depth, heads: model width, number of blocks, attention heads.
        max_length: the longest sequence (learned position table size).
        causal: mask attention to later positions (CLIP's text tower, language models).
    """

    def __init__(self, vocab_size: int, width: int = 128, depth: int = 2, heads: int = 4, max_length: int = 32,
                 causal: bool = True) -> None:
        super().__init__()
        if width % heads:
            raise PretrainlabError(f"text width {width} must be divisible by heads {heads}")
        self.width, self.max_length, self.causal = width, max_length, causal
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.position_embedding = nn.Parameter(torch.zeros(max_length, width))
        self.blocks = nn.ModuleList([
            nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, activation="gelu", batch_first=True,
                                       norm_first=True)
            for _ in range(depth)])
        self.final_norm = nn.LayerNorm(width)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.position_embedding, std=0.01)

    def forward_embeddings(self, embeddings: torch.Tensor, padding: torch.Tensor | None = None) -> torch.Tensor:
        """embeddings (B, L, width) of the input positions -> features (B, L, width).

        `padding` (B, L) True at padded positions; needed only without the causal mask (a causal model
        never looks at the padding after its text).
        """
        length = embeddings.shape[1]
        if length > self.max_length:
            raise PretrainlabError(f"sequence of {length} positions exceeds the text model's {self.max_length}")
        x = embeddings + self.position_embedding[:length]
        mask = nn.Transformer.generate_square_subsequent_mask(length, device=x.device, dtype=x.dtype) \
            if self.causal else None
        key_padding = None if self.causal or padding is None else padding
        for block in self.blocks:
            x = block(x, src_mask=mask, src_key_padding_mask=key_padding, is_causal=self.causal)
        return self.final_norm(x)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (B, L) int64 -> features (B, L, width)."""
        return self.forward_embeddings(self.token_embedding(ids), ids == PAD)


def trim_padding(ids: torch.Tensor) -> torch.Tensor:
    """ids (B, L) -> (B, L') without the columns that are padding in every row (positions are absolute)."""
    used = int((ids != PAD).any(dim=0).nonzero().max()) + 1 if ids.numel() else 1
    return ids[:, :used]


def mean_of_text(features: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """features (B, L, D) averaged over each row's non-padding positions -> (B, D)."""
    weights = (ids != PAD).unsqueeze(-1).to(features.dtype)
    return (features * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)


def end_of_text(features: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """features (B, L, D) at each row's first EOS (the last position when the text was cut) -> (B, D)."""
    is_end = ids == EOS
    position = torch.where(is_end.any(dim=1), is_end.int().argmax(dim=1), torch.full_like(ids[:, 0], ids.shape[1] - 1))
    return features[torch.arange(len(ids), device=ids.device), position]


POOLINGS = {"eos": end_of_text, "mean": mean_of_text}


class TransformerTextEncoder(nn.Module):
    """Captions -> (B, width): the tokenizer, a causal `TextTransformer`, pooled at end of text (CLIP) or
    averaged over the text's positions (`pooling="mean"`: a bag-of-words-like summary, learned faster
    from few captions and closer to short prompts)."""

    name = "transformer"
    trainable = True

    def __init__(self, tokenizer: Tokenizer, width: int = 128, depth: int = 2, heads: int = 4,
                 pooling: str = "eos") -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise PretrainlabError(f"unknown text pooling '{pooling}'; valid: {', '.join(POOLINGS)}")
        self.tokenizer = tokenizer
        self.options = {"width": width, "depth": depth, "heads": heads, "pooling": pooling}
        self.transformer = TextTransformer(tokenizer.vocab_size, width, depth, heads, tokenizer.max_length)
        self.pool = POOLINGS[pooling]
        self.embed_dim = width

    def encode(self, texts: list[str], device: torch.device | None = None) -> torch.Tensor:
        """B texts -> (B, width) on the model's device (`device` is ignored: the weights decide)."""
        ids = trim_padding(self.tokenizer.encode(texts)).to(self.transformer.position_embedding.device)  # (B, L)
        return self.pool(self.transformer(ids), ids)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "options": self.options, "tokenizer": self.tokenizer.to_dict()}
