"""A small attention LSTM caption decoder on frozen feature-map cells, plain or with CNM's collocated modules.

The plain decoder is Show, Attend and Tell (Xu et al., arXiv 1502.03044): an LSTM reads the previous word
and the mean cell, then one soft attention over the cells, queried by the new state, gives the context;
the next word comes from [state ; context]. The collocated decoder is the same LSTM with the attention
replaced by CNM's modules and controller (Yang, Zhang, Cai, "Learning to Collocate Neural Modules for Image
Captioning", arXiv 1904.08608; language/module_collocation.py), so a comparison of the two isolates the
module collocation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from pretrainlab.backbones.text.tokenizer import BOS, EOS, PAD, WordTokenizer
from pretrainlab.errors import PretrainlabError
from pretrainlab.language.module_collocation import CollocatedModules, PlainAttention, linguistic_loss

DECODERS = ("plain", "collocated")


@dataclass(frozen=True)
class DecoderConfig:
    """Args:
        kind: "plain" (one soft attention) or "collocated" (CNM's modules and controller).
        width: LSTM state, attention and module width; embed_dim: word embeddings.
        reasoning_steps: CNM's module execution steps per word (collocated only).
        linguistic_weight: weight of CNM's controller loss against the words' module tags (collocated only).
        dropout: on [state ; context] before the word classifier.
    """

    kind: str = "plain"
    width: int = 128
    embed_dim: int = 64
    reasoning_steps: int = 1
    linguistic_weight: float = 0.5
    dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.kind not in DECODERS:
            raise PretrainlabError(f"unknown caption decoder '{self.kind}'; valid: {', '.join(DECODERS)}")
        if self.width < 4 or self.embed_dim < 1 or self.reasoning_steps < 1 or self.linguistic_weight < 0:
            raise PretrainlabError("caption decoder needs width >= 4, embed_dim >= 1, reasoning_steps >= 1 and "
                                   f"linguistic_weight >= 0, got {self}")


class CaptionDecoder(nn.Module):
    """cells (B, N, C) of a frozen feature map (+ a learned position embedding per cell) -> caption logits."""

    def __init__(self, tokenizer: WordTokenizer, channels: int, cells: int, config: DecoderConfig) -> None:
        super().__init__()
        self.tokenizer, self.config = tokenizer, config
        width = config.width
        self.position = nn.Parameter(torch.zeros(1, cells, channels))
        nn.init.trunc_normal_(self.position, std=0.02)
        self.embedding = nn.Embedding(tokenizer.vocab_size, config.embed_dim, padding_idx=PAD)
        self.initial = nn.Linear(channels, 2 * width)  # mean cell -> (h0, c0)
        self.mean_cell = nn.Linear(channels, width)
        self.lstm = nn.LSTMCell(config.embed_dim + width, width)
        self.context = (CollocatedModules(channels, width, config.reasoning_steps) if config.kind == "collocated"
                        else PlainAttention(channels, width))
        self.dropout = nn.Dropout(config.dropout)
        self.classify = nn.Linear(2 * width, tokenizer.vocab_size)

    def start(self, cells: torch.Tensor) -> tuple[object, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Per image batch: the modules' projected cells, the mean-cell input (B, H) and the initial LSTM state."""
        cells = cells + self.position
        mean = cells.mean(dim=1)  # (B, C)
        h0, c0 = torch.tanh(self.initial(mean)).chunk(2, dim=-1)
        return self.context.prepare(cells), self.mean_cell(mean), (h0.contiguous(), c0.contiguous())

    def step(self, prepared: object, mean: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor],
             words: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor], torch.Tensor | None]:
        """One word: previous words (B,) -> logits (B, V), the new LSTM state, module weights (B, 4) or None."""
        hidden, memory = self.lstm(torch.cat([self.embedding(words), mean], dim=-1), state)
        context, weights = self.context(prepared, hidden)  # (B, H)
        return self.classify(self.dropout(torch.cat([hidden, context], dim=-1))), (hidden, memory), weights

    def forward(self, cells: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Teacher forcing: cells (B, N, C), ids (B, L) -> logits (B, L - 1, V) of tokens 1.., weights (B, L - 1, 4)."""
        prepared, mean, state = self.start(cells)
        logits, weights = [], []
        for position in range(ids.shape[1] - 1):
            step_logits, state, step_weights = self.step(prepared, mean, state, ids[:, position])
            logits.append(step_logits)
            weights.append(step_weights)
        stacked = torch.stack(weights, dim=1) if weights[0] is not None else None
        return torch.stack(logits, dim=1), stacked

    def loss(self, cells: torch.Tensor, ids: torch.Tensor, tags: torch.Tensor | None = None) -> torch.Tensor:
        """Next-word cross-entropy (padding ignored) + linguistic_weight x CNM's controller loss when tags are given."""
        logits, weights = self(cells, ids)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), ignore_index=PAD)
        if weights is not None and tags is not None and self.config.linguistic_weight > 0:
            loss = loss + self.config.linguistic_weight * linguistic_loss(weights, tags[:, 1:])
        return loss

    @torch.no_grad()
    def generate(self, cells: torch.Tensor, max_new_tokens: int | None = None
                 ) -> tuple[list[str], torch.Tensor | None]:
        """Greedy captions of cells (B, N, C), and the module weights (B, T, 4) of the collocated decoder."""
        count = cells.shape[0]
        prepared, mean, state = self.start(cells)
        words = torch.full((count,), BOS, dtype=torch.int64, device=cells.device)
        finished = torch.zeros(count, dtype=torch.bool, device=cells.device)
        chosen, weights = [], []
        for _ in range(max_new_tokens or self.tokenizer.max_length - 1):
            logits, state, step_weights = self.step(prepared, mean, state, words)
            words = torch.where(finished, torch.full_like(words, PAD), logits.argmax(dim=-1))
            chosen.append(words)
            weights.append(step_weights)
            finished |= words == EOS
            if bool(finished.all()):
                break
        ids = torch.stack(chosen, dim=1).cpu()
        stacked = torch.stack(weights, dim=1).cpu() if weights[0] is not None else None
        return [self.tokenizer.decode(row) for row in ids], stacked
